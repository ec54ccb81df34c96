"""Spatial knowledge extraction, the model half: depth, masks and region labels behind protocols.

Records and protocols (`protocols`) and validity verdicts (`validity`) import light (numpy only);
mask filtering (`masks`, torch) and each backend live in their own modules, and a backend imports
its model library only there:

    from spatialboost.extract.masks import MaskFilter                     # thresholds of both SAM 2 backends
    from spatialboost.extract.depth_pro import DepthProEstimator          # transformers
    from spatialboost.extract.sam2_hf import HFSam2Segmenter              # transformers
    from spatialboost.extract.sam2_official import OfficialSam2Segmenter  # sam2 package
    from spatialboost.extract.openclip_labeler import OpenCLIPLabeler     # open_clip

Backends load their model once, from a path the caller gives (they never pick a checkpoint or
download on their own), and run batched under `torch.inference_mode` on any device and dtype.
"""

from spatialboost.extract.protocols import (
    FOCAL_SOURCES,
    DepthEstimator,
    DepthResult,
    FocalSource,
    Label,
    Labeler,
    Mask,
    Segmenter,
)
from spatialboost.extract.validity import validate_depth

__all__ = [
    "FOCAL_SOURCES",
    "DepthEstimator",
    "DepthResult",
    "FocalSource",
    "Label",
    "Labeler",
    "Mask",
    "Segmenter",
    "validate_depth",
]
