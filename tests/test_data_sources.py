"""Image sources, the strict decoder and the manifest/quarantine split.

The corpus below holds good files of every mode the decoder converts and bad files of many
kinds; each bad kind must land in quarantine with its own reason code, and each good file must
decode to known RGB values. The S3 tests run against a real moto server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spatialboost.config import DataConfig, S3Config
from spatialboost.data import (
    BadImage,
    FolderSource,
    ImageLimits,
    ImageRef,
    ManifestEntry,
    QuarantineEntry,
    Reason,
    S3Source,
    build_manifest,
    decode_image,
    open_source,
    read_manifest,
    read_quarantine,
)
from spatialboost.data.decode import to_rgb_array

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
LIMITS = ImageLimits(max_file_bytes=200_000, max_pixels=1_000_000, min_side_px=16, formats=("JPEG", "PNG", "WEBP"))


# ---------------------------------------------------------------- file makers


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def quadrants(width: int = 40, height: int = 24) -> np.ndarray:
    """(H, W, 3) uint8: red top-left, blue top-right, green bottom-left, white bottom-right."""
    arr = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    arr[:h2, :w2] = (255, 0, 0)
    arr[:h2, w2:] = (0, 0, 255)
    arr[h2:, :w2] = (0, 255, 0)
    arr[h2:, w2:] = (255, 255, 255)
    return arr


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit RGB pixels (a decompression bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def noisy_png(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "PNG")


def corrupt_idat(png: bytes) -> bytes:
    """Flip bytes inside the first IDAT's compressed stream (CRC left stale)."""
    start = png.index(b"IDAT") + 4
    middle = start + 20
    return png[:middle] + bytes(b ^ 0xFF for b in png[middle : middle + 40]) + png[middle + 40 :]


def truncated_png() -> bytes:
    """Cut inside the IDAT chunk: the header is complete, the pixels are not."""
    data = noisy_png(64, seed=1)
    return data[: data.index(b"IDAT") + 200]


def sixteen_bit_rgb_png(rgb16: tuple[int, int, int], size: int = 16) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    row = b"\x00" + struct.pack(">3H", *rgb16) * size  # filter byte 0, then big-endian samples
    ihdr = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(row * size))
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_orientation(arr: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


GOOD_FILES = {
    # id -> bytes; expected pixels are checked in test_good_files_decode_to_known_rgb
    "rgb.png": encode(Image.fromarray(quadrants()), "PNG"),
    "exif6.jpg": jpeg_with_orientation(quadrants(), 6),
    "grey.png": encode(Image.new("L", (20, 18), 77), "PNG"),
    "grey_alpha.png": encode(Image.new("LA", (20, 18), (100, 0)), "PNG"),
    "rgba.png": encode(Image.fromarray(np.tile(np.array([255, 0, 0, 128], np.uint8), (16, 32, 1))), "PNG"),
    "sixteen.png": encode(Image.fromarray(np.array([[0, 1000, 32896, 65535]] * 16, np.uint16).repeat(4, 1)), "PNG"),
    "sixteen_rgb.png": sixteen_bit_rgb_png((65535, 32896, 1000)),
    "palette.png": b"",  # filled below: needs a putpalette call
    "lossless.webp": encode(Image.fromarray(quadrants(32, 32)), "WEBP", lossless=True),
    "cmyk.jpg": encode(Image.new("CMYK", (24, 24), (255, 0, 0, 0)), "JPEG", quality=95),
    "sub/deeper/UPPER.JPEG": encode(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG", quality=95),
}


def _palette_png() -> bytes:
    img = Image.new("P", (20, 20), 1)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 10, 20))  # left half index 0, right half index 1
    return encode(img, "PNG", transparency=0)  # index 0 transparent -> white


GOOD_FILES["palette.png"] = _palette_png()

_RANDOM = np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes()
_JPEG = encode(Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
_WEBP = encode(Image.fromarray(np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "WEBP")

BAD_FILES: dict[str, tuple[bytes, Reason]] = {
    "empty.jpg": (b"", Reason.EMPTY),
    "random.jpg": (b"\x00" + _RANDOM, Reason.NOT_AN_IMAGE),
    "notes.png": (b"these are my notes, not a picture\n" * 10, Reason.NOT_AN_IMAGE),
    "page.jpg": (b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n", Reason.NOT_AN_IMAGE),
    "truncated.jpg": (_JPEG[: len(_JPEG) * 6 // 10], Reason.TRUNCATED),
    "truncated.png": (truncated_png(), Reason.TRUNCATED),
    "truncated.webp": (_WEBP[: len(_WEBP) // 2], Reason.TRUNCATED),
    "corrupt_idat.png": (corrupt_idat(noisy_png(64, seed=2)), Reason.CORRUPT_DATA),
    "bad_ihdr_crc.png": (
        png_claiming(32, 32)[:29] + b"\x00\x00\x00\x00" + png_claiming(32, 32)[33:],
        Reason.CORRUPT_HEADER,
    ),
    "jpeg_garbage.jpg": (b"\xff\xd8\xff" + _RANDOM[:200].replace(b"\xff", b"\x00"), Reason.CORRUPT_HEADER),
    "bomb.png": (png_claiming(100_000, 100_000), Reason.TOO_MANY_PIXELS),
    "bomb_moderate.png": (png_claiming(5000, 5000), Reason.TOO_MANY_PIXELS),  # under Pillow's own limit
    "too_big.png": (noisy_png(300, seed=5), Reason.FILE_TOO_LARGE),  # about 270 kB > 200 kB
    "one_pixel.png": (encode(Image.new("RGB", (1, 1)), "PNG"), Reason.TOO_SMALL),
    "thin.png": (encode(Image.new("RGB", (300, 8)), "PNG"), Reason.TOO_SMALL),
    "animation.png": (encode(Image.new("RGB", (32, 32)), "GIF"), Reason.UNSUPPORTED_FORMAT),
    "scan.jpg": (encode(Image.new("RGB", (32, 32)), "TIFF"), Reason.UNSUPPORTED_FORMAT),
}

UNREADABLE = ("folder.jpg", "loop.jpg", "dangling.png")  # made in the corpus fixture
NOT_A_FILE = ("folder.jpg",)  # ... of which a directory: quarantined as not a regular file


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with every good and bad file, plus a directory, a symlink loop and a dangling link."""
    root = tmp_path_factory.mktemp("corpus")
    for name, data in [*GOOD_FILES.items(), *((n, d) for n, (d, _) in BAD_FILES.items())]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "folder.jpg").mkdir()
    (root / "folder.jpg" / "inside.png").write_bytes(GOOD_FILES["grey.png"])  # still found
    os.symlink("loop.jpg", root / "loop.jpg")
    os.symlink("nowhere.png", root / "dangling.png")
    (root / "readme.txt").write_text("not listed: wrong extension")
    (root / "anim.gif").write_bytes(BAD_FILES["animation.png"][0])  # not listed either
    return root


# ---------------------------------------------------------------- decoding


def test_corpus_files_are_what_their_names_say() -> None:
    """Guards the corpus itself: a maker that silently produced something else would hide bugs."""
    assert len(BAD_FILES) + len(UNREADABLE) >= 12
    assert len(BAD_FILES["too_big.png"][0]) > LIMITS.max_file_bytes
    for name in ("truncated.jpg", "truncated.png", "corrupt_idat.png"):
        Image.open(io.BytesIO(BAD_FILES[name][0]))  # the header still parses: the damage is in the pixels


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_raises_its_reason(name: str) -> None:
    data, reason = BAD_FILES[name]
    with pytest.raises(BadImage) as caught:
        decode_image(data, LIMITS)
    assert caught.value.reason is reason, caught.value.detail
    assert caught.value.detail


def test_good_files_decode_to_known_rgb() -> None:
    def dec(name: str) -> np.ndarray:
        out = decode_image(GOOD_FILES[name], LIMITS)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        return out.astype(int)

    np.testing.assert_array_equal(dec("rgb.png"), quadrants())
    np.testing.assert_array_equal(dec("lossless.webp"), quadrants(32, 32))
    assert (dec("grey.png") == 77).all()
    assert (dec("grey_alpha.png") == 255).all()  # fully transparent grey -> white
    assert np.abs(dec("rgba.png") - [255, 127, 127]).max() <= 1  # half-transparent red over white
    sixteen = dec("sixteen.png")
    assert sixteen.shape == (16, 16, 3)
    # v * 255 / 65535, rounded; a clipping conversion would give 255 for 1000 and 32896
    np.testing.assert_array_equal(sixteen[0, ::4, 0], [0, 4, 128, 255])
    assert np.abs(dec("sixteen_rgb.png") - [255, 128, 4]).max() <= 1  # Pillow keeps the high byte per channel
    palette = dec("palette.png")
    assert (palette[:, :10] == 255).all() and (palette[:, 10:] == [200, 100, 50]).all()
    assert np.abs(dec("cmyk.jpg") - [0, 255, 255]).max() <= 8  # pure cyan
    assert np.abs(dec("sub/deeper/UPPER.JPEG") - [10, 200, 30]).max() <= 8


def test_exif_orientation_6_is_rotated_clockwise() -> None:
    stored = quadrants(40, 24)  # (24, 40, 3) as stored in the file
    out = decode_image(GOOD_FILES["exif6.jpg"], LIMITS)
    assert out.shape == (40, 24, 3)  # width and height swap
    expected = np.rot90(stored, k=-1)  # clockwise, independent of Pillow's transpose
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 10  # JPEG ringing at edges; wrong turn: > 100
    # Corners, well inside each colour block: green top-left, red top-right, white bottom-left, blue bottom-right.
    for (row, col), colour in {
        (3, 3): (0, 255, 0),
        (3, 20): (255, 0, 0),
        (36, 3): (255, 255, 255),
        (36, 20): (0, 0, 255),
    }.items():
        assert np.abs(out[row, col].astype(int) - colour).max() <= 10, (row, col, out[row, col])


def test_unknown_mode_is_a_typed_error() -> None:
    with pytest.raises(BadImage) as caught:
        to_rgb_array(Image.new("F", (16, 16), 0.5))
    assert caught.value.reason is Reason.UNSUPPORTED_MODE


def test_decoding_changes_no_pillow_global() -> None:
    before = Image.MAX_IMAGE_PIXELS
    for data, _ in BAD_FILES.values():
        with pytest.raises(BadImage):
            decode_image(data, LIMITS)
    assert Image.MAX_IMAGE_PIXELS == before


def test_limits_follow_the_config() -> None:
    cfg = DataConfig(source="folder", uri="x", extensions=(".jpg", ".png"), max_pixels=123, min_side_px=7)
    limits = ImageLimits.from_config(cfg)
    assert limits.formats == ("JPEG", "PNG") and limits.max_pixels == 123 and limits.min_side_px == 7
    with pytest.raises(BadImage) as caught:  # WebP is a real image, but not among the configured extensions
        decode_image(GOOD_FILES["lossless.webp"], limits)
    assert caught.value.reason is Reason.UNSUPPORTED_FORMAT
    with pytest.raises(ValueError, match=".nope"):
        ImageLimits.from_config(cfg.model_copy(update={"extensions": (".nope",)}))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(GOOD_FILES)), cut=st.floats(0.0, 1.0), flip=st.integers(0, 10_000))
def test_damaged_good_files_raise_only_bad_image(name: str, cut: float, flip: int) -> None:
    """Truncate and flip one byte anywhere: the result decodes or raises BadImage, nothing else."""
    data = bytearray(GOOD_FILES[name][: int(len(GOOD_FILES[name]) * cut)])
    if data:
        data[flip % len(data)] ^= 0x5A
    try:
        out = decode_image(bytes(data), LIMITS)
    except BadImage:
        return
    assert out.dtype == np.uint8 and out.shape[2] == 3


# ---------------------------------------------------------------- folder source + manifest


def expected_reasons() -> dict[str, str]:
    reasons = {name: reason.value for name, (_, reason) in BAD_FILES.items()}
    reasons.update(dict.fromkeys(UNREADABLE, Reason.UNREADABLE.value))
    reasons.update(dict.fromkeys(NOT_A_FILE, Reason.NOT_A_FILE.value))
    return reasons


def test_folder_source_lists_sorted_relative_ids(corpus: Path) -> None:
    source = FolderSource(corpus, EXTENSIONS)
    ids = [ref.id for ref in source.refs()]
    assert ids == sorted(ids)
    assert set(ids) == set(GOOD_FILES) | set(BAD_FILES) | set(UNREADABLE) | {"folder.jpg/inside.png"}
    ref = next(r for r in source.refs() if r.id == "sub/deeper/UPPER.JPEG")
    assert ref.uri == (corpus / "sub/deeper/UPPER.JPEG").resolve().as_uri()
    assert ref.size == len(GOOD_FILES["sub/deeper/UPPER.JPEG"])


def test_folder_read_stops_past_max_bytes(corpus: Path) -> None:
    source = FolderSource(corpus, EXTENSIONS)
    ref = ImageRef("too_big.png", "", size=None)  # listing could not tell the size
    with pytest.raises(BadImage) as caught:
        source.read_bytes(ref, max_bytes=1000)
    assert caught.value.reason is Reason.FILE_TOO_LARGE
    assert source.read_bytes(ImageRef("grey.png", "", None)) == GOOD_FILES["grey.png"]


def test_manifest_splits_corpus_by_reason(corpus: Path, tmp_path: Path) -> None:
    manifest, quarantine = tmp_path / "out" / "manifest.jsonl", tmp_path / "out" / "quarantine.jsonl"
    report = build_manifest(FolderSource(corpus, EXTENSIONS), LIMITS, manifest, quarantine, progress=True)

    n_refs = len(list(FolderSource(corpus, EXTENSIONS).refs()))
    assert report.n_ok + report.n_quarantined == n_refs
    assert len(manifest.read_text().splitlines()) == report.n_ok == len(GOOD_FILES) + 1  # + folder.jpg/inside.png
    assert len(quarantine.read_text().splitlines()) == report.n_quarantined

    got = {entry.id: entry.reason for entry in read_quarantine(quarantine)}
    assert got == expected_reasons()
    want_counts: dict[str, int] = {}
    for reason in expected_reasons().values():
        want_counts[reason] = want_counts.get(reason, 0) + 1
    assert report.by_reason == want_counts

    entries = {entry.id: entry for entry in read_manifest(manifest)}
    for name, data in GOOD_FILES.items():
        assert entries[name].sha256 == hashlib.sha256(data).hexdigest()
        assert entries[name].size == len(data)
    assert (entries["exif6.jpg"].width, entries["exif6.jpg"].height) == (24, 40)  # as displayed
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["manifest.jsonl", "quarantine.jsonl"]


def test_quarantine_line_keeps_hash_of_rejected_bytes(corpus: Path, tmp_path: Path) -> None:
    build_manifest(FolderSource(corpus, EXTENSIONS), LIMITS, tmp_path / "m.jsonl", tmp_path / "q.jsonl", progress=False)
    entries = {entry.id: entry for entry in read_quarantine(tmp_path / "q.jsonl")}
    assert entries["page.jpg"].sha256 == hashlib.sha256(BAD_FILES["page.jpg"][0]).hexdigest()
    assert entries["loop.jpg"].sha256 is None and entries["loop.jpg"].detail


class ExplodingSource:
    """Lists a good file, then a source failure (not a bad file): the run must stop and leave no trace."""

    def __init__(self, inner: FolderSource) -> None:
        self.inner = inner

    def refs(self):  # type: ignore[no-untyped-def]
        yield ImageRef("grey.png", "file:///grey.png", None)
        yield ImageRef("boom.png", "file:///boom.png", None)

    def read_bytes(self, ref: ImageRef, max_bytes: int | None = None) -> bytes:
        if ref.id == "boom.png":
            raise ConnectionError("source went away")
        return self.inner.read_bytes(ref, max_bytes)


def test_failed_run_leaves_old_manifest_and_no_temp_files(corpus: Path, tmp_path: Path) -> None:
    manifest, quarantine = tmp_path / "manifest.jsonl", tmp_path / "quarantine.jsonl"
    manifest.write_text("previous run\n")
    with pytest.raises(ConnectionError):
        build_manifest(ExplodingSource(FolderSource(corpus, EXTENSIONS)), LIMITS, manifest, quarantine, progress=False)
    assert manifest.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]


def test_manifest_lines_round_trip() -> None:
    entry = ManifestEntry("a", "file:///a", "0" * 64, 3, 16, 16)
    assert ManifestEntry.from_json(entry.to_json()) == entry
    bad = QuarantineEntry("b", "s3://x/b", "empty", "zero bytes", None, 0)
    assert QuarantineEntry.from_json(bad.to_json()) == bad
    with pytest.raises(ValueError, match="schema_version"):
        ManifestEntry.from_json('{"schema_version": 99, "id": "a"}')


def test_open_source_maps_each_kind(corpus: Path) -> None:
    source = open_source(DataConfig(source="folder", uri=str(corpus)))
    assert isinstance(source, FolderSource) and source.root == corpus
    with pytest.raises(FileNotFoundError):
        open_source(DataConfig(source="folder", uri=str(corpus / "missing")))


# ---------------------------------------------------------------- S3 through a real moto server

FAKE_KEY_ID = "AKIAFAKEKEYFORTESTS01"
FAKE_SECRET = "fake/Secret+Value+That+Must+Never+Leak+0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials in the environment only; no real AWS config can leak in."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


S3_OBJECTS = {
    "images/good/rgb.png": GOOD_FILES["rgb.png"],
    "images/good/exif6.jpg": GOOD_FILES["exif6.jpg"],
    "images/empty.jpg": b"",
    "images/page.jpg": BAD_FILES["page.jpg"][0],
    "images/too_big.png": BAD_FILES["too_big.png"][0],
    "images/bomb.png": BAD_FILES["bomb.png"][0],
    "images/notes.txt": b"not listed",
    "images2/other.png": GOOD_FILES["grey.png"],  # shares the prefix string, not the folder
    "elsewhere/x.png": GOOD_FILES["grey.png"],
    **{f"images/many/{i:03d}.png": GOOD_FILES["grey.png"] for i in range(7)},
}


@pytest.fixture
def bucket(moto_endpoint: str, s3_env: None) -> str:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"sb-test-{free_port()}"
    client.create_bucket(Bucket=name)
    for key, data in S3_OBJECTS.items():
        client.put_object(Bucket=name, Key=key, Body=data)
    return name


def s3_cfg(endpoint: str, **extra: object) -> S3Config:
    return S3Config(endpoint_url=endpoint, region="us-east-1", **extra)


@pytest.mark.integration
def test_s3_lists_every_page_and_reads(moto_endpoint: str, bucket: str) -> None:
    source = S3Source(f"s3://{bucket}/images", s3_cfg(moto_endpoint), EXTENSIONS, page_size=2)
    calls: list[str] = []
    source.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))
    refs = list(source.refs())
    want = sorted(k.removeprefix("images/") for k in S3_OBJECTS if k.startswith("images/") and not k.endswith(".txt"))
    assert [ref.id for ref in refs] == want
    assert len(calls) >= len(want) // 2  # one request per page of 2 keys: many pages
    ref = next(r for r in refs if r.id == "good/rgb.png")
    assert ref.uri == f"s3://{bucket}/images/good/rgb.png" and ref.size == len(GOOD_FILES["rgb.png"])
    assert source.read_bytes(ref) == GOOD_FILES["rgb.png"]
    with pytest.raises(BadImage) as caught:
        source.read_bytes(ref, max_bytes=100)  # ranged read: at most 101 bytes come over the wire
    assert caught.value.reason is Reason.FILE_TOO_LARGE
    with pytest.raises(BadImage) as caught:
        source.read_bytes(ImageRef("gone.png", f"s3://{bucket}/images/gone.png", 5))
    assert caught.value.reason is Reason.UNREADABLE


@pytest.mark.integration
def test_s3_manifest_has_no_credentials(moto_endpoint: str, bucket: str, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = DataConfig(source="s3", uri=f"s3://{bucket}/images/", s3=s3_cfg(moto_endpoint))
    source = open_source(cfg)
    assert isinstance(source, S3Source)
    manifest, quarantine = tmp_path / "manifest.jsonl", tmp_path / "quarantine.jsonl"
    report = build_manifest(source, LIMITS, manifest, quarantine, progress=True)

    assert report.n_ok == 2 + 7
    assert report.by_reason == {"empty": 1, "file_too_large": 1, "not_an_image": 1, "too_many_pixels": 1}
    assert report.n_ok + report.n_quarantined == len(list(source.refs()))
    out = manifest.read_text() + quarantine.read_text() + "".join(capsys.readouterr())
    for secret in (FAKE_KEY_ID, FAKE_SECRET, FAKE_SECRET.split("/")[1]):
        assert secret not in out
    exif = next(e for e in read_manifest(manifest) if e.id == "good/exif6.jpg")
    assert (exif.width, exif.height, exif.uri) == (24, 40, f"s3://{bucket}/images/good/exif6.jpg")


@pytest.mark.integration
def test_s3_credentials_from_a_profile(moto_endpoint: str, bucket: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[tester]\naws_access_key_id = {FAKE_KEY_ID}\naws_secret_access_key = {FAKE_SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    source = S3Source(f"s3://{bucket}/images/many", s3_cfg(moto_endpoint, profile="tester"), EXTENSIONS)
    assert len(list(source.refs())) == 7
