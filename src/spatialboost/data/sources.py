"""Image sources behind one small interface: list refs cheaply, then read bytes by ref.

    source = open_source(cfg.data)          # FolderSource, S3Source or WorldSource
    for ref in source.refs():               # ImageRef(id, uri, size): no file is opened
        data = source.read_bytes(ref, max_bytes=limits.max_file_bytes)

A source never decodes: it hands bytes to `decode_image`. Read failures that belong to one file
(a broken or looping symlink, a missing S3 object) raise `BadImage(Reason.UNREADABLE, ...)`, a
directory, FIFO, socket or device named like an image `BadImage(Reason.NOT_A_FILE, ...)` (never
opened for reading: a FIFO would block forever); failures of the source itself (S3
unreachable, a bad bucket) propagate, so an outage never quarantines a whole corpus. What a
source does not list is counted in `skipped` (reason -> count) once `refs()` has been consumed,
so no file vanishes unaccounted for.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from spatialboost.data.records import BadImage, ImageRef, Reason
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.io import FileTooLarge, NotARegularFile, read_regular_file

if TYPE_CHECKING:
    from spatialboost.config import DataConfig, S3Config


@runtime_checkable
class ImageSource(Protocol):
    """Anything that lists images and reads their bytes; `skipped` counts, by reason, what the
    last `refs()` left out (filled as it is consumed)."""

    skipped: dict[str, int]

    def refs(self) -> Iterator[ImageRef]:
        """Every image in a stable order (sorted by id), without opening any file."""
        ...

    def read_bytes(self, ref: ImageRef, max_bytes: int | None = None) -> bytes:
        """The file's bytes. Raises BadImage(FILE_TOO_LARGE) past `max_bytes`, BadImage(UNREADABLE)
        when this one file cannot be read."""
        ...


def _too_large(max_bytes: int) -> BadImage:
    return BadImage(Reason.FILE_TOO_LARGE, f"more than max_file_bytes {max_bytes} bytes")


def _read_local(path: Path, max_bytes: int | None) -> bytes:
    """Read at most max_bytes + 1 bytes, so a huge file is never pulled into memory; only a
    regular file is read (a FIFO would block forever, a device never ends)."""
    try:
        return read_regular_file(path, max_bytes)
    except NotARegularFile as err:
        raise BadImage(Reason.NOT_A_FILE, f"a {err.kind}, not a regular file") from None
    except FileTooLarge:
        raise _too_large(max_bytes or 0) from None
    except OSError as err:
        raise BadImage(Reason.UNREADABLE, f"{type(err).__name__}: {err.strerror or err}") from None


class FolderSource:
    """Every file below `root` (recursively) whose name ends in one of `extensions`.

    ids are paths relative to root with '/' separators ("sub/a.jpg"). Entries that match by name
    but are not regular files (a directory called x.jpg, a broken or looping symlink) are listed
    too, so they reach quarantine instead of vanishing. Symlinked directories are not followed
    (no loops).
    """

    def __init__(self, root: str | os.PathLike[str], extensions: tuple[str, ...] | list[str]) -> None:
        self.root = Path(root)
        self.extensions = tuple(ext.lower() for ext in extensions)
        self.skipped: dict[str, int] = {}
        if not self.root.exists():
            raise FileNotFoundError(f"data.uri: image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"data.uri: {self.root} is not a folder of images")

    def refs(self) -> Iterator[ImageRef]:
        """Skipped, by reason: "other_extension" (a file whose suffix is not in `extensions`),
        "symlinked_directory" (a link to a folder: not followed, so no loop)."""
        found: list[ImageRef] = []
        skipped: Counter[str] = Counter()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames.sort()
            for name in dirnames:
                if name.lower().endswith(self.extensions):
                    found.append(self._ref(Path(dirpath) / name))
                elif os.path.islink(os.path.join(dirpath, name)):
                    skipped["symlinked_directory"] += 1
            for name in filenames:
                if name.lower().endswith(self.extensions):
                    found.append(self._ref(Path(dirpath) / name))
                else:
                    skipped["other_extension"] += 1
        self.skipped = dict(sorted(skipped.items()))
        yield from sorted(found, key=lambda ref: ref.id)

    def _ref(self, path: Path) -> ImageRef:
        try:
            size: int | None = path.stat().st_size if path.is_file() else None
        except OSError:  # a symlink loop raises here
            size = None
        absolute = Path(os.path.abspath(path))
        return ImageRef(id=path.relative_to(self.root).as_posix(), uri=absolute.as_uri(), size=size)

    def path_of(self, ref: ImageRef) -> Path:
        """The local file behind a ref."""
        return self.root / ref.id

    def read_bytes(self, ref: ImageRef, max_bytes: int | None = None) -> bytes:
        return _read_local(self.path_of(ref), max_bytes)


class WorldSource:
    """The RGB images of a `spatialboost-rgbd` dataset (docs/dataset-format.md), one split or all."""

    def __init__(self, root: str | os.PathLike[str], split: str | None = None) -> None:
        self.dataset = RGBDDataset(root)
        self.split = split
        self.skipped: dict[str, int] = {}  # the index lists every image: nothing to skip
        if split is not None and split not in self.dataset.splits():
            raise ValueError(f"{self.dataset.index_path}: no split {split!r} (has {self.dataset.splits()})")

    def refs(self) -> Iterator[ImageRef]:
        for image_id in sorted(self.dataset.ids(self.split)):
            path = self.dataset.rgb_path(image_id)
            try:
                size: int | None = path.stat().st_size
            except OSError:
                size = None
            yield ImageRef(id=image_id, uri=Path(os.path.abspath(path)).as_uri(), size=size)

    def read_bytes(self, ref: ImageRef, max_bytes: int | None = None) -> bytes:
        return _read_local(self.dataset.rgb_path(ref.id), max_bytes)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split an s3:// uri: "s3://bucket/some/prefix" -> ("bucket", "some/prefix/").

    The prefix always ends in '/' or is ''.

    The trailing '/' keeps prefix "images" from also matching "images2/...".
    """
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// uri: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def s3_client(cfg: S3Config) -> Any:
    """A boto3 S3 client from `boto3.Session(profile_name=cfg.profile)` with the configured endpoint
    and region: credentials come only from the environment or the AWS profile. A client is not
    fork-safe: make one per process (DataLoader workers included)."""
    import boto3  # imported here: only S3 users pay for boto3's import time

    session = boto3.Session(profile_name=cfg.profile)
    return session.client("s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region)


def get_s3_object(client: Any, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
    """The bytes of s3://bucket/key (at most max_bytes + 1 of them when max_bytes is given).

    Raises BadImage(UNREADABLE) when this one object is missing or forbidden, with only the S3
    code and HTTP status (messages may echo request details); other failures (S3 unreachable)
    propagate.
    """
    from botocore.exceptions import ClientError

    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if max_bytes is not None:
        request["Range"] = f"bytes=0-{max_bytes}"  # inclusive: at most max_bytes + 1 bytes
    try:
        return client.get_object(**request)["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"InvalidRange"} and max_bytes is not None:  # a zero-byte object
            return b""
        if status in {403, 404} or code in {"NoSuchKey", "AccessDenied"}:
            raise BadImage(Reason.UNREADABLE, f"S3 {code} (HTTP {status})") from None
        raise


def split_s3_uri(uri: str) -> tuple[str, str]:
    """The bucket and key of one object: s3://bucket/some/key.jpg -> ("bucket", "some/key.jpg")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// uri: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"no bucket or key in {uri!r}")
    return bucket, key


class S3Source:
    """Objects below s3://bucket/prefix whose keys end in one of `extensions`.

    The client comes from `boto3.Session(profile_name=cfg.profile)` with the configured endpoint
    and region: credentials come only from the environment or the AWS profile and are never
    stored, logged or written (uris are s3://bucket/key). ids are keys relative to the prefix.
    `page_size` is the list_objects_v2 MaxKeys per request (1000 is the S3 maximum).
    `client` is the boto3 S3 client (public so callers can add event hooks or retries).
    """

    def __init__(
        self,
        uri: str,
        cfg: S3Config,
        extensions: tuple[str, ...] | list[str] = (".jpg", ".jpeg", ".png", ".webp"),
        page_size: int = 1000,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.extensions = tuple(ext.lower() for ext in extensions)
        self.page_size = page_size
        self.client: Any = s3_client(cfg)
        self.skipped: dict[str, int] = {}

    def refs(self) -> Iterator[ImageRef]:
        """Skipped, by reason: "directory_marker" (a key ending in '/'), "other_extension"."""
        # S3 lists keys in UTF-8 binary order; ids share the prefix, so this is sorted by id too.
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": self.page_size}
        )
        skipped: Counter[str] = Counter()
        self.skipped = {}
        for page in pages:
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                if key.endswith("/"):
                    skipped["directory_marker"] += 1
                elif not key.lower().endswith(self.extensions):
                    skipped["other_extension"] += 1
                else:
                    yield ImageRef(id=key[len(self.prefix) :], uri=f"s3://{self.bucket}/{key}", size=int(obj["Size"]))
                self.skipped = dict(sorted(skipped.items()))

    def read_bytes(self, ref: ImageRef, max_bytes: int | None = None) -> bytes:
        data = get_s3_object(self.client, self.bucket, self.prefix + ref.id, max_bytes)
        if max_bytes is not None and len(data) > max_bytes:
            raise _too_large(max_bytes)
        return data


def source_problem(cfg: DataConfig) -> str | None:
    """Why `cfg`'s local source cannot be read at all (one line naming data.uri), or None.

    For a stage to check before it starts: a missing folder or dataset is the user's mistake,
    not a failed task. S3 is not checked here (that needs the network and credentials)."""
    root = Path(cfg.uri)
    if cfg.source == "folder" and not root.exists():
        return f"data.uri: image folder {root} does not exist"
    if cfg.source == "folder" and not root.is_dir():
        return f"data.uri: {root} is not a folder of images"
    if cfg.source == "world" and not (root / "dataset.json").is_file():
        return f"data.uri: no world dataset at {root} ({root / 'dataset.json'} is missing; run `spatialboost world render`)"
    return None


def open_source(cfg: DataConfig) -> ImageSource:
    """The source `cfg.source` names, configured from `cfg` (an explicit mapping, no lookup by name)."""
    if cfg.source == "folder":
        return FolderSource(cfg.uri, cfg.extensions)
    if cfg.source == "s3":
        return S3Source(cfg.uri, cfg.s3, extensions=cfg.extensions)
    if cfg.source == "world":
        return WorldSource(cfg.uri, cfg.split)
    raise ValueError(f"unknown data source {cfg.source!r} (known: folder, s3, world)")
