"""Scene records: what the extraction stage writes per image, one JSON line each.

    record = SceneRecord.from_json(line)        # validates; raises pydantic.ValidationError
    record.objects[0].mask.decode()             # (H, W) bool, the object's pixels
    line = record.to_json()                     # stable bytes: same record, same line

A `SceneRecord` is one image turned into a canonical 3D scene (the paper's extraction stage);
a `QuarantineRecord` says why an image could not be (a reason code plus a human detail). Units:
metres, pixels, radians for box yaw, degrees for camera pitch and roll. Frames: the camera
frame is OpenCV's (x right, y down, z forward); the canonical frame is gravity-aligned
(x right, y forward, z up; geometry/frame.py), `X_can = rotation @ X_cam + translation`.

Floats are rounded to 6 decimals on validation (micrometres, micro-radians): the records stay
small, and a value read back and written again gives the same bytes.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 3
"""Written on every scene and quarantine record and in the shard manifest; bump on any change
of a field's meaning. 2: `SceneRecord.depth_map` (the stored depth map), synthesize quarantine.
3: boxes are amodal (completed beyond the visible surface, geometry/completion.py); the
evidence says how (`completion`, `ground_contact`) and keeps the visible box's size."""

FLOAT_DECIMALS = 6


def _round(value: float) -> float:
    return round(float(value), FLOAT_DECIMALS)


Float = Annotated[float, AfterValidator(_round)]
Vec3 = tuple[Float, Float, Float]
Extent = Annotated[float, AfterValidator(_round), Field(gt=0)]
"""A box extent, metres: never zero (extraction floors extents at one pixel)."""
Mat3 = tuple[Vec3, Vec3, Vec3]

FrameSourceName = Literal["dataset_gravity", "ransac_plane", "fallback_camera"]
FocalSourceName = Literal["dataset", "exif", "model"]
CompletionName = Literal["visible", "round_prior", "visible_depth", "free_space"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Masks as COCO run-length strings


class MaskRLE(_Record):
    """A binary mask as COCO's compressed run-length string (what pycocotools' `encode` gives).

    size: (height, width) pixels. counts: run lengths over the column-major (Fortran-order)
    pixels, starting with a run of zeros (possibly empty), written in COCO's 6-bit ASCII code.
    A 128 x 128 object mask takes some tens of characters.
    """

    size: tuple[int, int]
    counts: str

    @classmethod
    def encode(cls, mask: np.ndarray) -> MaskRLE:
        """(H, W) bool (or 0/1) -> MaskRLE."""
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
        return cls(size=(mask.shape[0], mask.shape[1]), counts=counts_to_string(mask_to_counts(mask)))

    def decode(self) -> np.ndarray:
        """(H, W) bool."""
        return counts_to_mask(string_to_counts(self.counts), self.size)

    @property
    def area(self) -> int:
        """Pixels in the mask (sum of the odd runs), without decoding it."""
        return int(sum(string_to_counts(self.counts)[1::2]))


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> run lengths over column-major pixels, zeros first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # indices where a new run starts
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def counts_to_mask(counts: list[int], size: tuple[int, int]) -> np.ndarray:
    """Run lengths (zeros first) over column-major pixels -> (H, W) bool."""
    height, width = size
    if sum(counts) != height * width:
        raise ValueError(f"runs cover {sum(counts)} pixels, the mask has {height * width}")
    values = np.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


_CHUNKS = 13  # 5-bit chunks of a 64-bit count difference


def counts_to_string(counts: list[int]) -> str:
    """COCO's `rleToString`, vectorised over counts (`counts_to_string_reference` is the loop).

    Each count minus the count two back (from the fourth on) is written in 5-bit chunks, low
    first, with 0x20 marking "more follows", offset by 48; the last chunk's 0x10 bit is the sign.
    """
    values = np.asarray(counts, dtype=np.int64)
    if values.size == 0:
        return ""
    x = values.copy()
    x[3:] -= values[1:-2]
    n_bits = int(np.abs(x).max()).bit_length() + 1  # with the sign bit
    k = min(_CHUNKS, n_bits // 5 + 1)  # chunks the widest difference needs
    shifts = 5 * np.arange(k, dtype=np.int64)  # (K,)
    chunks = (x[:, None] >> shifts) & 0x1F  # (N, K); >> is arithmetic on int64
    rest = x[:, None] >> (shifts + 5)  # what is left after each chunk
    more = np.where(chunks & 0x10, rest != -1, rest != 0)  # (N, K)
    n_chunks = np.argmin(more, axis=1) + 1  # the first chunk with nothing more is the last
    used = np.arange(k) < n_chunks[:, None]  # (N, K)
    codes = (chunks | np.where(more, 0x20, 0)) + 48
    return codes[used].astype(np.uint8).tobytes().decode("ascii")


def counts_to_string_reference(counts: list[int]) -> str:
    """COCO's `rleToString`, one character at a time (the reference for `counts_to_string`)."""
    chars: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative differences stay negative
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return "".join(chars)


def string_to_counts(text: str) -> list[int]:
    """COCO's `rleFrString`, the inverse of `counts_to_string`."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


# ---------------------------------------------------------------------------------------------
# Objects


class CanonicalBox(_Record):
    """Gravity-aligned box yawed about canonical z (geometry.OrientedBox).

    center: (3,) canonical frame, metres. size: (length, width, height), metres, length >= width,
    each > 0.
    yaw_rad: canonical +x to the length axis, counter-clockwise seen from above, in [-pi/2, pi/2).
    """

    center: Vec3
    size: tuple[Extent, Extent, Extent]
    yaw_rad: Float


class ObjectEvidence(_Record):
    """What an object's measurement rests on (geometry.ObjectEvidence, plus the mask's scores).

    n_points: mask pixels with valid depth; n_used: those measured (after subsampling to
    max_points_per_object); n_kept: those left after outlier removal. depth_spread: IQR / median
    of the object's z-depths. plane_residual_m: RMS residual of the ground plane, if one was used.
    mask_score, mask_stability: the segmenter's predicted IoU and stability (1 for ground truth).
    completion: how the box's far side was placed (geometry.CompletionMethod); ground_contact:
    the box reaches down to the ground; visible_size: (length, width, height) of the box of the
    visible points alone, metres. The defaults describe a record built by hand from a box.
    """

    n_points: int = Field(ge=0)
    n_used: int = Field(ge=0)
    n_kept: int = Field(ge=0)
    depth_spread: Float
    plane_residual_m: Float | None
    frame_source: FrameSourceName
    focal_source: FocalSourceName
    mask_score: Float
    mask_stability: Float
    completion: CompletionName = "visible"
    ground_contact: bool = False
    visible_size: Vec3 | None = None


class ObjectRecord(_Record):
    """One object of a scene.

    object_id: the dataset's instance id (ground truth) or the mask's rank, 1 = best (models).
    label, label_score: region label and its probability (1 for ground-truth labels).
    colour: colour name when the source knows it (the world does), else None.
    mask: the object's pixels; mask_area_px: their count. bbox: (x0, y0, x1, y1) pixels, x1 and
    y1 exclusive. box: canonical oriented 3D box. center_cam: the box centre in the camera
    frame, metres. center_distance_m: camera centre to box centre; nearest_distance_m: camera
    centre to the nearest kept point, metres. confidence in [0, 1] (geometry.object_confidence).
    """

    object_id: int = Field(ge=0)
    label: str
    label_score: Float
    colour: str | None
    mask: MaskRLE
    mask_area_px: int = Field(ge=1)
    bbox: tuple[int, int, int, int]
    box: CanonicalBox
    center_cam: Vec3
    center_distance_m: Float = Field(ge=0)
    nearest_distance_m: Float = Field(ge=0)
    evidence: ObjectEvidence
    confidence: Float = Field(ge=0, le=1)


# ---------------------------------------------------------------------------------------------
# Scenes


class Intrinsics(_Record):
    """Pinhole intrinsics, pixels: K @ [X/Z, Y/Z, 1] = [u + 0.5, v + 0.5, 1]; where the focal came from."""

    fx: Float = Field(gt=0)
    fy: Float = Field(gt=0)
    cx: Float
    cy: Float
    focal_source: FocalSourceName


class FrameRecord(_Record):
    """The canonical frame of an image (geometry.CanonicalFrame).

    rotation: (3, 3) R_can_from_cam, rows are canonical x, y, z in the camera frame.
    translation: (3,) metres; the camera centre in the canonical frame. source and reason: which
    evidence set "up", in a line. camera_height_m: None when no ground plane gave it.
    pitch_deg, roll_deg: the camera's (negative pitch looks down; positive roll dips the right).
    plane_inliers: ground-plane inlier points (0 without a plane); plane_residual_m: their RMS.
    """

    rotation: Mat3
    translation: Vec3
    source: FrameSourceName
    reason: str
    camera_height_m: Float | None
    pitch_deg: Float
    roll_deg: Float
    plane_inliers: int = Field(ge=0)
    plane_residual_m: Float | None


class DepthStats(_Record):
    """Depth over the image's valid pixels (finite, > 0), metres; valid_fraction in [0, 1]."""

    valid_fraction: Float = Field(ge=0, le=1)
    min_m: Float
    median_m: Float
    mean_m: Float
    max_m: Float


class DepthMapRef(_Record):
    """Where the depth map a scene was measured on is stored (extract/depth_maps.py).

    file: the shard's depth archive, relative to the folder of the scene shards
    ("shard-00000.depth.zip"). sha256: of the map's PNG bytes; also its member name in the
    archive ("<sha256>.png"). encoding: "png16-log": 16-bit codes, 0 = no depth, code k >= 1 =
    min_m * exp((k - 1) * ln(max_m / min_m) / 65534) metres. The map has the record's width and
    height.
    """

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    encoding: Literal["png16-log"] = "png16-log"
    min_m: Float = Field(gt=0)
    max_m: Float = Field(gt=0)


class Provenance(_Record):
    """Who made the record: backend ("ground_truth" or "models") and model id per role."""

    backend: Literal["ground_truth", "models"]
    models: dict[str, str] = Field(default_factory=dict)


class SceneRecord(_Record):
    """One image as a canonical 3D scene.

    dropped: objects left out, by reason ("too_few_points", "empty_mask", ...), so that no
    object vanishes unaccounted for. depth_map: the stored depth map the scene was measured on
    (the pixel-level questions read it); None for a record built in memory, never for one the
    extraction stage wrote. The intrinsics are the ones that map was made (and unprojected) with.
    """

    schema_version: Literal[3] = SCHEMA_VERSION
    image_id: str
    image_uri: str
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    intrinsics: Intrinsics
    frame: FrameRecord
    depth: DepthStats
    objects: tuple[ObjectRecord, ...]
    dropped: dict[str, int] = Field(default_factory=dict)
    provenance: Provenance
    depth_map: DepthMapRef | None = None

    @field_validator("objects")
    @classmethod
    def _unique_ids(cls, objects: tuple[ObjectRecord, ...]) -> tuple[ObjectRecord, ...]:
        ids = [obj.object_id for obj in objects]
        if len(set(ids)) != len(ids):
            raise ValueError(f"object ids must be unique, got {ids}")
        return objects

    def to_json(self) -> str:
        """One line of JSON (no newline); the same record always gives the same bytes."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, line: str) -> SceneRecord:
        """Parse and validate one line."""
        return cls.model_validate_json(line)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the paper's name for the intrinsics matrix
        """(3, 3) float64 intrinsics matrix, pixels."""
        k = self.intrinsics
        return np.array([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]])


class QuarantineRecord(_Record):
    """An image a stage could not turn into its output: extract (no scene; reason a
    scene.QuarantineReason) or synthesize (no conversation; reason a qa.pipeline.QAQuarantineReason).

    reason: a code; detail: one human-readable line.
    """

    schema_version: Literal[3] = SCHEMA_VERSION
    id: str
    uri: str
    stage: Literal["extract", "synthesize"] = "extract"
    reason: str
    detail: str

    def to_json(self) -> str:
        """One line of JSON (no newline)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, line: str) -> QuarantineRecord:
        """Parse and validate one line."""
        return cls.model_validate_json(line)
