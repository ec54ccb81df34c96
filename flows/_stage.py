"""What every stage entry point shares: argument parsing, the task runner, the metrics file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from prefect import Flow
from prefect.task_runners import ThreadPoolTaskRunner

from spatialboost.config import ConfigError, OrchestrationConfig, load_config


def task_runner(cfg: OrchestrationConfig) -> ThreadPoolTaskRunner:
    """The Prefect task runner `orchestration` asks for."""
    return ThreadPoolTaskRunner(max_workers=cfg.max_workers)


def run_stage(flow: Flow[..., Any], description: str, argv: list[str] | None = None) -> Any:
    """Parse `--params` / `--set`, validate the config, and run `flow` with the configured runner."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", "-S", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a params value (repeatable)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.params, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    configured: Callable[..., Any] = flow.with_options(task_runner=task_runner(cfg.orchestration))
    return configured(params=args.params, overrides=args.overrides)
