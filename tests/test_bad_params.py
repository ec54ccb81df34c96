"""A malformed-params corpus and the runtime failures a user can cause, through the CLI.

Every case must end in a non-zero exit with one line per problem on stderr, starting "error:",
naming the file or the params key at fault, without a traceback and within a time bound (a
FIFO given as the params file, or an alias bomb, used to hang or run for minutes). Credentials
given in params never reach the output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spatialboost.cli import app

ROOT = Path(__file__).resolve().parents[1]
SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYSECRETKEY"
CASE_TIMEOUT_S = 20

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

# name -> (params file content: str, bytes or a maker; overrides; what the message must name)
FILE_CASES: dict[str, tuple[object, list[str], str]] = {
    "non-utf8 bytes": (b"world:\n  n_train: \xff\xfe\n", [], "not UTF-8"),
    "latin-1 text": ("world:\n  root: caf\u00e9\n".encode("latin-1"), [], "not UTF-8"),
    "yaml syntax error": ("world:\n  n_train: [1, 2\n", [], "not valid YAML: line"),
    "tab indentation": ("world:\n\tn_train: 3\n", [], "not valid YAML"),
    "alias bomb": (BOMB, [], "anchors and aliases are not allowed"),
    "one alias": ("world: &w {n_train: 3}\nbootstrap: {seed: 1}\ndata: *w\n", [], "anchors and aliases"),
    "duplicate section": ("world:\n  n_train: 3\nworld:\n  n_test: 2\n", [], "duplicate key 'world'"),
    "duplicate key": ("world:\n  n_train: 3\n  n_train: 4\n", [], "duplicate key 'n_train'"),
    "deep nesting": ("world: " + "[" * 200 + "]" * 200 + "\n", [], "nested deeper"),
    "top-level list": ("- world\n- data\n", [], "expected a mapping"),
    "top-level scalar": ("just a string\n", [], "expected a mapping"),
    "non-string section": ("1: {n_train: 3}\n", [], "section names are strings"),
    "python tag": ("world: !!python/object/apply:os.system ['true']\n", [], "not valid YAML"),
    "unknown section": ("wrold: {n_train: 3}\n", [], "wrold: unknown key"),
    "typo in key": ("world: {n_trian: 3}\n", [], "world.n_trian: unknown key"),
    "credentials key": (f"data: {{s3: {{aws_secret_access_key: {SECRET}}}}}\n", [], "credentials never go in params"),
    "bool for int": ("world: {n_train: true}\n", [], "world.n_train: expected an integer, got a boolean"),
    "yes for int": ("world: {n_test: yes}\n", [], "world.n_test: expected an integer"),
    "string for int": ("world: {n_train: '12'}\n", [], "world.n_train: expected an integer, got a string"),
    "negative count": ("world: {n_train: -1}\n", [], "world.n_train"),
    "fraction for int": ("world: {n_train: 1.5}\n", [], "world.n_train"),
    "inf learning rate": (
        "evaluate: {learning_rates: [.inf]}\n",
        [],
        "evaluate.learning_rates: item 0: must be a finite number",
    ),
    "nan lr": ("train: {lr: .nan}\n", [], "train.lr: must be a finite number"),
    "number for bool": (
        "extract: {geometry: {outlier_removal: 1}}\n",
        [],
        "extract.geometry.outlier_removal: expected true or false",
    ),
    "string for bool": ("registry: {enabled: 'no'}\n", [], "registry.enabled: expected true or false"),
    "negative sizes": ("world: {object_size_m: [-0.5, -0.1]}\n", [], "world.object_size_m: must be > 0"),
    "reversed range": (
        "world: {object_distance_m: [12, 1]}\n",
        [],
        "world.object_distance_m: low 12.0 is greater than high 1.0",
    ),
    "vertical camera": ("world: {camera_pitch_deg: [-95, -5]}\n", [], "world.camera_pitch_deg"),
    "depth range upside down": (
        "extract: {depth: {min_depth_m: 100, max_depth_m: 1}}\n",
        [],
        "extract.depth: min_depth_m 100.0 must be below",
    ),
    "focal range upside down": ("extract: {depth: {min_focal_px: 1.0e+6}}\n", [], "extract.depth: min_focal_px"),
    "exponent without a point": (
        "train: {lr: 1e-4}\n",
        [],
        "train.lr: expected a number, got a string (YAML 1.1 reads 1e-4 as text: write 1.0e-04",
    ),
    "no decoder": ("data: {extensions: [.heic]}\n", [], "data.extensions: no decoder reads ['.heic']"),
    "extension without dot": (
        "data: {extensions: [jpg]}\n",
        [],
        "data.extensions: extensions must be lower case and start with '.'",
    ),
    "no extension": ("data: {extensions: []}\n", [], "data.extensions: needs at least one extension"),
    "limits admit nothing": ("data: {min_side_px: 10000, max_pixels: 100}\n", [], "data: min_side_px 10000 needs"),
    "tracking uri nonsense": ("tracking: {tracking_uri: not a uri at all}\n", [], "tracking.tracking_uri"),
    "tracking uri bad sqlite": (
        "tracking: {tracking_uri: 'sqlite:/x.db'}\n",
        [],
        "tracking.tracking_uri: a sqlite tracking URI",
    ),
    "tracking uri credentials": (
        f"tracking: {{tracking_uri: 'http://me:{SECRET}@mlflow:5000'}}\n",
        [],
        "tracking.tracking_uri: credentials never go in params",
    ),
    "endpoint credentials": (
        f"data: {{s3: {{endpoint_url: 'http://AKIA:{SECRET}@127.0.0.1:9000'}}}}\n",
        [],
        "data.s3.endpoint_url: credentials never go in params",
    ),
    "endpoint scheme": (
        "data: {s3: {endpoint_url: 'ftp://127.0.0.1'}}\n",
        [],
        "data.s3.endpoint_url: not a S3 endpoint URL",
    ),
    "endpoint port": (
        "data: {s3: {endpoint_url: 'http://127.0.0.1:99999'}}\n",
        [],
        "data.s3.endpoint_url: not a valid S3 endpoint URL",
    ),
    "region": ("data: {s3: {region: 'Europe West'}}\n", [], "data.s3.region"),
    "bucket name": ("data: {source: s3, uri: 's3://Bad_Bucket/x'}\n", [], "data: uri 's3://Bad_Bucket/x'"),
    "source and uri disagree": ("data: {source: s3, uri: data/world}\n", [], "data: source 's3' does not match"),
    "artifact location credentials": (
        f"tracking: {{artifact_location: 'ftp://u:{SECRET}@host/a'}}\n",
        [],
        "tracking.artifact_location: credentials",
    ),
    "unknown device": ("device: gpu\n", [], "device"),
    "unknown shape": ("world: {classes: [dodecahedron]}\n", [], "world.classes: unknown shape classes"),
    "betas": ("train: {adam_betas: [1.5, 0.9]}\n", [], "train.adam_betas"),
    "mix does not add up": ("synthesize: {n_turns: 12}\n", [], "synthesize: mix adds up to 10 turns but n_turns is 12"),
    "cron": ("orchestration: {schedule_cron: '* *'}\n", [], "orchestration.schedule_cron"),
    "bad override yaml": ("", ["world.n_train=[1"], "override 'world.n_train=[1': not valid YAML"),
    "override without =": ("", ["world.n_train"], "override 'world.n_train': expected section.key=value"),
    "override empty part": ("", ["world..n_train=1"], "override 'world..n_train=1': expected section.key=value"),
    "override into a value": (
        "world: {n_train: 3}\n",
        ["world.n_train.x=1"],
        "override 'world.n_train.x=1': n_train is not a section",
    ),
    "override with anchor": ("", ["world.n_train=&a 1"], "anchors and aliases"),
    "override bool": ("", ["world.n_train=true"], "world.n_train: expected an integer, got a boolean"),
    "override credentials": (
        "",
        [f"data.s3.endpoint_url=https://k:{SECRET}@s3.example.com"],
        "credentials never go in params",
    ),
}


def _special_file(kind: str, folder: Path) -> Path:
    path = folder / f"params-{kind}.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.close()
    elif kind == "device":
        os.symlink("/dev/zero", path)
    elif kind == "huge":
        path.write_text("# padding\n" * 200_000)
    return path


SPECIAL_CASES = {
    "directory": "a directory, not a params file",
    "fifo": "a FIFO, not a params file",
    "socket": "a socket, not a params file",
    "device": "a character device, not a params file",
    "huge": "larger than 1048576 bytes",
    "missing": "no such params file",
}


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail the case instead of hanging (SIGALRM interrupts a blocking open or read)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s: the command hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(args: list[str]) -> tuple[int, str]:
    with time_limit(CASE_TIMEOUT_S):
        result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout + result.stderr


def assert_one_clean_error(code: int, output: str, names: str, *, exit_code: int = 2) -> None:
    assert code == exit_code, output
    assert "Traceback" not in output and SECRET not in output, output
    lines = output.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), output
    assert len(lines) <= 3 and all(len(line) < 600 for line in lines), output
    assert names in output, output


def test_the_corpus_has_at_least_30_cases() -> None:
    assert len(FILE_CASES) + len(SPECIAL_CASES) >= 30


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_malformed_params_give_one_line_naming_the_key(name: str, tmp_path: Path) -> None:
    content, overrides, names = FILE_CASES[name]
    path = tmp_path / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else str(content).encode())
    code, output = run_cli(["config", "show", "-p", str(path), *[arg for o in overrides for arg in ("-S", o)]])
    assert_one_clean_error(code, output, names)
    if not isinstance(content, bytes) and name not in ("bad override yaml",) and "override" not in name:
        assert str(path) in output  # the file is named too


@pytest.mark.parametrize("kind", list(SPECIAL_CASES))
def test_params_paths_that_are_not_files(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml" if kind == "missing" else _special_file(kind, tmp_path)
    code, output = run_cli(["config", "show", "-p", str(path)])
    assert_one_clean_error(code, output, SPECIAL_CASES[kind])
    assert str(path) in output


def test_config_validate_names_every_bad_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("world: {n_train: 3}\n")
    bad.write_bytes(b"\xff")
    code, output = run_cli(["config", "validate", str(good), str(bad), str(tmp_path)])
    assert code == 2 and "Traceback" not in output
    assert f"{good}: ok" in output and f"{bad}: not UTF-8" in output and f"{tmp_path}: a directory" in output


def test_the_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with time_limit(5):
        code, output = run_cli(["config", "validate", str(path)])
    assert code == 2 and "anchors and aliases" in output


# --- runtime failures a user can cause --------------------------------------------------------

QUIET_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}  # fmt: skip


def runtime_cases(tmp: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (CLI args, environment, what the message must name)."""
    out = ["-S", f"data.manifest={tmp / 'm.jsonl'}", "-S", f"data.quarantine={tmp / 'q.jsonl'}", "--no-progress"]
    creds = {"AWS_ACCESS_KEY_ID": "AKIATEST", "AWS_SECRET_ACCESS_KEY": SECRET}
    s3 = ["-S", "data.source=s3", "-S", "data.uri=s3://some-bucket/images"]
    return {
        "missing folder": (["data", "manifest", "-S", "data.source=folder", "-S", f"data.uri={tmp / 'nope'}",
                            "-S", f"data.watch={tmp / 'nope'}", *out], {}, f"data.uri: image folder {tmp / 'nope'} does not exist"),
        "folder is a file": (["data", "manifest", "-S", "data.source=folder", "-S", f"data.uri={tmp / 'file.txt'}",
                              "-S", f"data.watch={tmp / 'file.txt'}", *out], {}, "is not a folder of images"),
        "missing world": (["data", "manifest", "-S", f"data.uri={tmp / 'noworld'}", "-S", f"data.watch={tmp / 'noworld'}", *out],
                          {}, f"{tmp / 'noworld'}/dataset.json"),
        "missing world split": (["data", "manifest", "-S", f"data.uri={tmp / 'noworld'}", "-S", f"data.watch={tmp / 'noworld'}",
                                 "-S", "data.split=val", *out], {}, "dataset.json"),
        "unreachable S3 endpoint": (["data", "manifest", *s3, "-S", "data.s3.endpoint_url=http://127.0.0.1:9", *out],
                                    {**QUIET_AWS, **creds}, "cannot reach the S3 endpoint http://127.0.0.1:9 (data.s3.endpoint_url"),
        "missing AWS profile": (["data", "manifest", *s3, "-S", "data.s3.profile=nosuchprofile", *out], QUIET_AWS,
                                "data.s3.profile: no AWS profile 'nosuchprofile'"),
        "no AWS credentials": (["data", "manifest", *s3, "-S", "data.s3.endpoint_url=http://127.0.0.1:9", *out], QUIET_AWS,
                               "no usable AWS credentials"),
        "missing manifest": (["extract", "-S", f"data.uri={ROOT / 'tests'}", "-S", f"data.manifest={tmp / 'none.jsonl'}",
                              "-S", "extract.backend=ground_truth", "--no-progress"], {}, f"{tmp / 'none.jsonl'}"),
        "missing scenes": (["synthesize", "-S", f"extract.output={tmp / 'noscenes'}", "--no-progress"], {},
                           f"{tmp / 'noscenes'}: no such folder of scene shards"),
        "unknown profile": (["profile", "use", "nosuch", "-p", str(tmp / "p.yaml")], {}, "no profile 'nosuch'"),
        "unwritable world root": (["world", "render", "-S", "world.root=/proc/spatialboost-world", "-S", "world.n_train=1",
                                   "-S", "world.n_test=0", "--no-progress"], {}, "/proc/spatialboost-world"),
    }  # fmt: skip


RUNTIME = sorted(runtime_cases(Path("unused")))


@pytest.mark.parametrize("name", RUNTIME)
def test_runtime_failures_give_one_line_naming_the_file_or_key(name: str, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    args, env, names = runtime_cases(tmp_path)[name]
    for key in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected_exit = 2 if name == "unknown profile" else 1
    code, output = run_cli(args)
    assert_one_clean_error(code, output, names, exit_code=expected_exit)


def test_a_failure_in_a_real_process_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """The console entry point itself: exit status, stderr, and --debug."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [sys.executable, "-m", "spatialboost.cli", "data", "manifest", "-S", "data.source=folder",
            "-S", f"data.uri={tmp_path / 'nope'}", "-S", f"data.watch={tmp_path / 'nope'}", "--no-progress"]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert (
        done.returncode == 1
        and done.stderr.strip() == f"error: data.uri: image folder {tmp_path / 'nope'} does not exist"
    )
    debug = subprocess.run([*args[:3], "--debug", *args[3:]], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


@pytest.mark.parametrize(
    ("stage", "overrides", "names"),
    [
        ("manifest", ["data.source=folder", "data.uri=/nonexistent/images", "data.watch=/nonexistent/images"],
         "error: data.uri: image folder /nonexistent/images does not exist"),
        ("extract", ["data.manifest=/nonexistent/manifest.jsonl"], "error: data.manifest: /nonexistent/manifest.jsonl does not exist"),
        ("synthesize", ["extract.output=/nonexistent/scenes"], "error: extract.output: /nonexistent/scenes does not exist"),
        ("world", ["world.n_train=true"], "world.n_train: expected an integer, got a boolean"),
    ],
)  # fmt: skip
def test_a_dvc_stage_fails_in_one_line_before_prefect_starts(stage: str, overrides: list[str], names: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [sys.executable, "-m", f"flows.{stage}", *[arg for o in overrides for arg in ("-S", o)]]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and names in done.stderr
