"""A bad-input corpus through the real command: `spatialboost data manifest` on a folder of 50+
kinds of files a user may have, in a subprocess bounded by a timeout.

Asserted: the command ends (no hang: a FIFO, a socket or /dev/zero named like an image would
block or never end if opened and read), with exit 0 and no traceback; every entry of the folder
is accounted for: in the manifest, in quarantine with a reason and a detail naming what was
wrong, or counted as skipped by reason; the good files are exactly the manifest; a rerun after a
killed run leaves no temporary behind.
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120
MAX_FILE_BYTES = 300_000


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def rgb(width: int = 40, height: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    return encode(rgb(48, 32), "JPEG", exif=exif.tobytes())


GOOD = {
    "plain.png": encode(rgb(), "PNG"),
    "photo.jpg": encode(rgb(), "JPEG", quality=90),
    "photo.jpeg": encode(rgb(seed=1), "JPEG"),
    "lossless.webp": encode(rgb(), "WEBP", lossless=True),
    "grey.png": encode(rgb().convert("L"), "PNG"),
    "alpha.png": encode(rgb().convert("RGBA"), "PNG"),
    "palette.png": encode(rgb().convert("P"), "PNG"),
    "sixteen_bit.png": encode(Image.fromarray(np.full((32, 40), 40000, dtype=np.uint16)), "PNG"),
    "cmyk.jpg": encode(rgb().convert("CMYK"), "JPEG"),
    "rotated.jpg": exif_rotated_jpeg(),
    "UPPER.PNG": encode(rgb(seed=2), "PNG"),
    ".hidden.png": encode(rgb(seed=3), "PNG"),
    "space in name.jpg": encode(rgb(seed=4), "JPEG"),
    "café ünïcode.png": encode(rgb(seed=5), "PNG"),
    "trailing_garbage.png": encode(rgb(seed=6), "PNG") + b"garbage after IEND",
    "deep/er/nested.png": encode(rgb(seed=7), "PNG"),
}

BAD = {  # name -> (bytes, reason)
    "empty.png": (b"", "empty"),
    "one_byte.jpg": (b"\xff", "not_an_image"),
    "text.jpg": (b"just some text, not an image\n" * 3, "not_an_image"),
    "page.png": (b"<!doctype html><html><body>404</body></html>", "not_an_image"),
    "random.png": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_an_image"),
    "zeros.webp": (bytes(2048), "not_an_image"),
    "svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"/>', "not_an_image"),
    "archive.png": (b"PK\x03\x04" + bytes(64), "not_an_image"),
    "document.jpg": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "not_an_image"),
    "program.png": (b"\x7fELF\x02\x01\x01" + bytes(64), "not_an_image"),
    "truncated.png": (encode(rgb(), "PNG")[:200], "truncated"),
    "truncated.jpg": (encode(rgb(), "JPEG")[:-400], "truncated"),
    "cut_in_header.jpg": (encode(rgb(), "JPEG")[:300], "corrupt_header"),
    "header_only.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", "corrupt_header"),
    "soi_eoi.jpg": (b"\xff\xd8\xff\xd9", "corrupt_header"),
    "bad_crc.png": (None, "corrupt_data"),  # made below: a flipped pixel byte breaks the IDAT CRC
    "garbage_idat.png": (png_declaring(40, 32, b"not zlib data at all"), "corrupt_data"),
    "bad_ihdr.png": (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\x00" * 5) + png_chunk(b"IEND", b""),
        "corrupt_header",
    ),
    "zero_size.png": (png_declaring(0, 0), "corrupt_header"),
    "bomb.png": (png_declaring(50_000, 50_000), "too_many_pixels"),
    "tiny.png": (encode(rgb(8, 8), "PNG"), "too_small"),
    "one_pixel.png": (encode(rgb(1, 1), "PNG"), "too_small"),
    "thin.jpg": (encode(rgb(300, 8), "JPEG"), "too_small"),
    "too_big.png": (
        encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 400, 3), dtype=np.uint8)), "PNG"),
        "file_too_large",
    ),  # fmt: skip
    "gif_named.png": (encode(rgb(), "GIF"), "unsupported_format"),
    "tiff_named.jpg": (encode(rgb(), "TIFF"), "unsupported_format"),
    "bmp_named.png": (encode(rgb(), "BMP"), "unsupported_format"),
    "psd_named.png": (b"8BPS\x00\x01" + bytes(64), "unsupported_format"),
    "truncated.webp": (encode(rgb(), "WEBP")[:60], "truncated"),
}

SKIPPED = {  # not listed: suffix outside data.extensions
    "notes.txt": b"hello",
    "photo.heic": b"\x00\x00\x00\x18ftypheic" + bytes(32),
    "animation.gif": encode(rgb(), "GIF"),
    "README": b"no suffix at all",
    "image.png.bak": encode(rgb(), "PNG"),
}


def make_corpus(root: Path) -> dict[str, str]:
    """Write the corpus; returns {id: expected outcome} ("ok", a reason code, or "skipped:<reason>")."""
    expected: dict[str, str] = {}
    for name, data in GOOD.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        expected[name] = "ok"
    good_png = bytearray(encode(rgb(), "PNG"))
    idat = good_png.index(b"IDAT")
    good_png[idat + 20] ^= 0xFF
    for name, (data, reason) in BAD.items():
        (root / name).write_bytes(bytes(good_png) if data is None else data)
        expected[name] = reason
    for name, data in SKIPPED.items():
        (root / name).write_bytes(data)
        expected[name] = "skipped:other_extension"
    # Not regular files: never opened for reading.
    os.mkfifo(root / "pipe.png")
    expected["pipe.png"] = "not_a_file"
    (root / "folder.jpg").mkdir()
    expected["folder.jpg"] = "not_a_file"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "socket.png"))
    sock.close()
    expected["socket.png"] = "not_a_file"
    os.symlink("/dev/zero", root / "zero.png")
    expected["zero.png"] = "not_a_file"
    os.symlink("/dev/null", root / "null.jpg")
    expected["null.jpg"] = "not_a_file"
    # Links.
    os.symlink("nowhere.png", root / "dangling.png")
    expected["dangling.png"] = "unreadable"
    os.symlink("loop.jpg", root / "loop.jpg")
    expected["loop.jpg"] = "unreadable"
    os.symlink("plain.png", root / "link_to_good.png")
    expected["link_to_good.png"] = "ok"
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "inside.png").write_bytes(GOOD["plain.png"])
    expected["elsewhere/inside.png"] = "ok"
    os.symlink("elsewhere", root / "linked_dir")
    expected["linked_dir"] = "skipped:symlinked_directory"
    # Odd names.
    (root / "new\nline.png").write_bytes(GOOD["plain.png"])
    expected["new\nline.png"] = "ok"
    weird = os.fsencode(root) + b"/bytes\xff\xfe.png"
    with open(weird, "wb") as handle:
        handle.write(GOOD["plain.png"])
    expected[os.fsdecode(b"bytes\xff\xfe.png")] = "ok"
    return expected


def run_manifest(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "spatialboost.cli", "data", "manifest", "--no-progress",
        "-S", "data.source=folder", "-S", f"data.uri={root}", "-S", f"data.watch={root}",
        "-S", f"data.manifest={out / 'manifest.jsonl'}", "-S", f"data.quarantine={out / 'quarantine.jsonl'}",
        "-S", f"data.max_file_bytes={MAX_FILE_BYTES}", "-S", "data.max_pixels=10000000", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("bad-inputs")
    return root, make_corpus(root)


def test_the_corpus_has_the_kinds_it_claims(corpus) -> None:
    root, expected = corpus
    kinds = {outcome for outcome in expected.values()}
    assert (
        len(expected) >= 55 and len(BAD) + 5 >= 30
    )  # >= 40 kinds of bad input: BAD, non-regular files, links, skipped
    assert {"not_a_file", "unreadable", "skipped:other_extension", "skipped:symlinked_directory"} <= kinds
    assert len(list(root.iterdir())) >= 50


def test_manifest_accounts_for_every_file_without_hanging(corpus, tmp_path) -> None:
    root, expected = corpus
    done = run_manifest(root, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    report = json.loads(done.stdout.strip().splitlines()[-1])
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    quarantine = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    got = {row["id"]: "ok" for row in manifest} | {row["id"]: row["reason"] for row in quarantine}
    listed = {k: v for k, v in expected.items() if not v.startswith("skipped:")}
    assert got == listed
    skipped = [v.removeprefix("skipped:") for v in expected.values() if v.startswith("skipped:")]
    assert report["skipped_by_reason"] == {reason: skipped.count(reason) for reason in sorted(set(skipped))}
    assert report["n_ok"] + report["n_quarantined"] + report["n_skipped"] == len(expected)
    for row in quarantine:  # every record says what was wrong with which file, in a line
        assert row["uri"].startswith("file://") and row["detail"] and "\n" not in row["detail"], row
    details = {row["id"]: row["detail"] for row in quarantine}
    assert "FIFO" in details["pipe.png"] and "socket" in details["socket.png"] and "device" in details["zero.png"]


def test_a_rerun_removes_what_a_killed_run_left(corpus, tmp_path) -> None:
    root, _ = corpus
    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()  # a pid that has exited: its temporaries are stale
    stale = [tmp_path / f".manifest.jsonl.{dead.pid}.tmp", tmp_path / f".quarantine.jsonl.{dead.pid}.tmp"]
    for path in stale:
        path.write_text('{"partial": ')
    live = tmp_path / f".manifest.jsonl.{os.getppid()}.tmp"  # a live writer's (our parent's pid): kept
    live.write_text("")
    done = run_manifest(root, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in stale)
    assert live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [live.name]


def test_a_fifo_inside_a_world_dataset_is_quarantined_not_waited_on(tmp_path) -> None:
    """The extraction reads depth maps and instance masks too: a FIFO there must not block it."""
    from spatialboost.config import WorldConfig
    from spatialboost.world import render_dataset

    world = tmp_path / "world"
    render_dataset(WorldConfig(n_train=0, n_test=3, width=32, height=32), world, progress=False)
    (world / "depth" / "test-000001.npy").unlink()
    os.mkfifo(world / "depth" / "test-000001.npy")
    (world / "instances" / "test-000002.png").unlink()
    os.symlink("/dev/zero", world / "instances" / "test-000002.png")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    flags = ["-S", f"data.uri={world}", "-S", f"data.watch={world}", "-S", f"data.manifest={out / 'm.jsonl'}",
             "-S", f"data.quarantine={out / 'q.jsonl'}", "-S", f"extract.output={out / 'scenes'}", "--no-progress"]  # fmt: skip
    for command in (["data", "manifest"], ["extract"]):
        done = subprocess.run([sys.executable, "-m", "spatialboost.cli", *command, *flags], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    quarantined = {}
    for path in (out / "scenes").glob("shard-*.quarantine.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            quarantined[row["id"]] = (row["reason"], row["detail"])
    assert quarantined["test-000001"][0] == "invalid_depth" and "FIFO" in quarantined["test-000001"][1]
    assert quarantined["test-000002"][0] == "unreadable" and "character device" in quarantined["test-000002"][1]
    records = [
        line
        for path in (out / "scenes").glob("shard-[0-9][0-9][0-9][0-9][0-9].jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(records) == 1  # test-000000, the intact one
