"""Tasks of the `bootstrap` stage (demo): train the small LVLM, or install its released copy."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spatialboost.config import SpatialBoostConfig
from spatialboost.train.bootstrap import run_bootstrap
from spatialboost.train.release import install_release


@task(name="bootstrap", retries=0, cache_policy=NO_CACHE)
def bootstrap_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Pre-train the demo's encoder and LLM, then align + instruct; returns the phase metrics."""
    return run_bootstrap(cfg, cfg.bootstrap.output, progress=True)


@task(name="install-bootstrap-release", retries=1, cache_policy=NO_CACHE)
def install_release_task(cfg: SpatialBoostConfig) -> dict[str, Any]:
    """Verify bootstrap.release against the configured recipe and copy it to bootstrap.output."""
    return install_release(cfg, cfg.bootstrap.release, cfg.bootstrap.output)
