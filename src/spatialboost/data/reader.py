"""Images by manifest id for the model observer: decoded, with their intrinsics when a dataset
(the world's) or EXIF knows them.

    reader = ImageReader(open_source(cfg.data), refs, ImageLimits.from_config(cfg.data), dataset)
    loaded = reader.read("sub/photo.jpg")      # LoadedImage; BadImage when unreadable
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from spatialboost.data.decode import decode_image
from spatialboost.data.exif import exif_focal_px
from spatialboost.data.records import BadImage, ImageLimits, ImageRef, Reason
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.data.sources import ImageSource

KnownFocal = Literal["dataset", "exif"]
"""Where a known focal length came from (the extraction's FocalSource, less "model")."""


@dataclass(frozen=True, eq=False, kw_only=True)
class LoadedImage:
    """A decoded image and what is known about its camera.

    rgb: (H, W, 3) uint8. fx, fy, cx, cy: pixels, None when unknown. focal_source: "dataset" or
    "exif" when fx is known, else None. gravity_cam: (3,) or None.
    """

    image_id: str
    uri: str
    rgb: np.ndarray
    fx: float | None
    fy: float | None
    cx: float | None
    cy: float | None
    focal_source: KnownFocal | None
    gravity_cam: np.ndarray | None


class ImageReader:
    """Reads and decodes images by manifest id; knows their intrinsics when a dataset or EXIF says.

    source: where the bytes are; refs: the manifest's images (id, uri, size); limits: the
    decoder's. dataset: an RGB-D dataset over the same ids (the world source): its intrinsics and
    gravity are used, and win over EXIF.
    """

    def __init__(
        self,
        source: ImageSource,
        refs: Iterable[ImageRef],
        limits: ImageLimits,
        dataset: RGBDDataset | None = None,
    ) -> None:
        self.source = source
        self.refs = {ref.id: ref for ref in refs}
        self.limits = limits
        self.dataset = dataset

    def uri(self, image_id: str) -> str:
        ref = self.refs.get(image_id)
        return ref.uri if ref is not None else ""

    def read(self, image_id: str) -> LoadedImage:
        """The decoded image; raises BadImage when it cannot be read or decoded."""
        ref = self.refs.get(image_id)
        if ref is None:
            raise BadImage(Reason.UNREADABLE, f"id {image_id!r} is not in the manifest")
        data = self.source.read_bytes(ref, max_bytes=self.limits.max_file_bytes)
        rgb = decode_image(data, self.limits)  # (H, W, 3) uint8
        height, width = rgb.shape[:2]
        if self.dataset is not None and image_id in self.dataset:
            row = self.dataset.row(image_id)
            gravity = np.asarray(row.gravity_cam, dtype=np.float64)
            return LoadedImage(
                image_id=image_id,
                uri=ref.uri,
                rgb=rgb,
                fx=row.fx,
                fy=row.fy,
                cx=row.cx,
                cy=row.cy,
                focal_source="dataset",
                gravity_cam=gravity if np.isfinite(gravity).all() else None,
            )
        focal = exif_focal_px(data, width, height)
        if focal is not None:
            return LoadedImage(
                image_id=image_id,
                uri=ref.uri,
                rgb=rgb,
                fx=focal,
                fy=focal,
                cx=width / 2,
                cy=height / 2,
                focal_source="exif",
                gravity_cam=None,
            )
        return LoadedImage(
            image_id=image_id,
            uri=ref.uri,
            rgb=rgb,
            fx=None,
            fy=None,
            cx=None,
            cy=None,
            focal_source=None,
            gravity_cam=None,
        )
