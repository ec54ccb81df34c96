"""Images in: sources (folder, S3, RGB-D world), a strict decoder, the manifest and quarantine,
and the reader of the RGB-D dataset format."""

from spatialboost.data.decode import decode_image
from spatialboost.data.manifest import (
    ManifestReport,
    build_manifest,
    build_manifest_for,
    read_manifest,
    read_quarantine,
)
from spatialboost.data.records import BadImage, ImageLimits, ImageRef, ManifestEntry, QuarantineEntry, Reason
from spatialboost.data.rgbd import IndexRow, RGBDDataset, RGBDFormatError, RGBDSample
from spatialboost.data.sources import FolderSource, ImageSource, S3Source, WorldSource, open_source

__all__ = [
    "BadImage", "FolderSource", "ImageLimits", "ImageRef", "ImageSource", "IndexRow", "ManifestEntry",
    "ManifestReport", "QuarantineEntry", "build_manifest_for", "RGBDDataset", "RGBDFormatError", "RGBDSample", "Reason",
    "S3Source", "WorldSource", "build_manifest", "decode_image", "open_source", "read_manifest",
    "read_quarantine",
]  # fmt: skip
