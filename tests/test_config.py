"""The one config schema: shipped params files validate; mistakes fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from spatialboost.cli import app
from spatialboost.config import ConfigError, SpatialBoostConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _demo() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_params_file_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, SpatialBoostConfig)
    assert cfg.profile in {"demo", "paper"}


def test_profiles_are_what_they_claim() -> None:
    assert load_config(ROOT / "params.yaml").profile == "demo"
    paper = load_config(ROOT / "configs" / "paper.yaml")
    assert paper.profile == "paper"
    assert paper.hub.models["lvlm"].repo_id == "llava-hf/llava-1.5-7b-hf"
    assert paper.hub.models["depth"].repo_id == "apple/DepthPro-hf"


def test_unknown_key_names_the_key_and_lists_the_allowed_ones(tmp_path: Path) -> None:
    data = _demo()
    data["world"]["n_trian"] = 3
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    message = str(err.value)
    assert "world.n_trian" in message
    assert "unknown key" in message and "n_train" in message
    assert len(message.splitlines()) == 1


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    data = _demo()
    data["world"]["width"] = "wide"
    with pytest.raises(ConfigError, match=r"world\.width: .*integer.*'wide'"):
        load_config(_write(tmp_path, data))


def test_inverted_range_and_unknown_class_are_explained(tmp_path: Path) -> None:
    data = _demo()
    data["world"]["object_distance_m"] = [12.0, 1.0]
    data["world"]["classes"] = ["cube", "teapot"]
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    lines = str(err.value).splitlines()
    assert any("world.object_distance_m" in line and "greater than" in line for line in lines)
    assert any("world.classes" in line and "teapot" in line for line in lines)


def test_credentials_are_refused_in_params(tmp_path: Path) -> None:
    data = _demo()
    data["data"]["s3"]["aws_secret_access_key"] = "hunter2"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    assert "credentials never go in params" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_s3_source_needs_an_s3_uri(tmp_path: Path) -> None:
    data = _demo()
    data["data"]["source"] = "s3"
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        load_config(_write(tmp_path, data))


def test_overrides_are_typed_and_validated() -> None:
    cfg = load_config(ROOT / "params.yaml", ["world.n_train=7", "world.fov_deg=[40, 60]"])
    assert cfg.world.n_train == 7 and cfg.world.fov_deg == (40.0, 60.0)
    with pytest.raises(ConfigError, match="world.n_train"):
        load_config(ROOT / "params.yaml", ["world.n_train=-1"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(ROOT / "params.yaml", ["world.n_train"])


def test_cli_config_show_prints_the_resolved_config() -> None:
    result = CliRunner().invoke(app, ["config", "show", "--params", str(ROOT / "params.yaml"), "--section", "world"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["world"]["n_train"] == load_config(ROOT / "params.yaml").world.n_train


def test_cli_typo_gives_one_line_not_a_traceback(tmp_path: Path) -> None:
    data = _demo()
    data["wrold"] = {}
    result = CliRunner().invoke(app, ["config", "show", "--params", str(_write(tmp_path, data))])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line] == [
        f"error: {tmp_path / 'params.yaml'}: wrold: unknown key (allowed here: {', '.join(sorted(SpatialBoostConfig.model_fields))})"
    ]
    assert "world" in SpatialBoostConfig.model_fields and "profile" in SpatialBoostConfig.model_fields


@pytest.mark.parametrize("command", [[], ["config"], ["config", "show"], ["world", "render"], ["data", "manifest"], ["hub", "fetch"], ["pull"], ["extract"], ["synthesize"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
