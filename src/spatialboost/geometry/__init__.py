"""Pure geometry: depth + masks + intrinsics -> canonical 3D objects and their relations.

Frames: the camera frame is OpenCV's (x right, y down, z forward); the canonical frame is
gravity-aligned (x right, y forward, z up, origin on the ground below the camera when known).
Units: metres, pixels, radians for box yaw, degrees for camera pitch and roll.
"""

from spatialboost.geometry.boxes import (
    AxisAlignedBox,
    OrientedBox,
    axis_aligned_box,
    min_area_rectangle,
    min_area_rectangle_naive,
    oriented_box,
    wrap_half_turn,
)
from spatialboost.geometry.camera import intrinsics_matrix, project, unproject, unproject_masked, valid_depth_mask
from spatialboost.geometry.completion import (
    CompletedBox,
    CompletionMethod,
    CompletionParams,
    SeenThrough,
    complete_box,
    free_space_test,
    round_prior_axis,
)
from spatialboost.geometry.frame import (
    CanonicalFrame,
    FrameSource,
    canonical_frame,
    canonical_frame_from_gravity,
    gravity_from_pitch_roll,
    pitch_roll_from_gravity,
    rotation_cam_from_canonical,
)
from spatialboost.geometry.objects import (
    ConfidenceWeights,
    FocalSource,
    ObjectEvidence,
    ObjectGeometry,
    depth_spread,
    measure_object,
    object_confidence,
)
from spatialboost.geometry.plane import GroundPlane, NoGroundPlane, fit_ground_plane_ransac, fit_plane_least_squares
from spatialboost.geometry.pointcloud import (
    OutlierParams,
    cluster_radius,
    largest_cluster_mask,
    mean_knn_distance,
    mean_knn_distance_naive,
    radius_components,
    radius_components_naive,
    remove_outliers,
    statistical_inlier_mask,
)
from spatialboost.geometry.relations import PairRelations, relate

__all__ = [
    "AxisAlignedBox",
    "CanonicalFrame",
    "CompletedBox",
    "CompletionMethod",
    "CompletionParams",
    "ConfidenceWeights",
    "FocalSource",
    "FrameSource",
    "GroundPlane",
    "NoGroundPlane",
    "ObjectEvidence",
    "SeenThrough",
    "ObjectGeometry",
    "OrientedBox",
    "OutlierParams",
    "PairRelations",
    "axis_aligned_box",
    "canonical_frame",
    "canonical_frame_from_gravity",
    "cluster_radius",
    "complete_box",
    "free_space_test",
    "depth_spread",
    "fit_ground_plane_ransac",
    "fit_plane_least_squares",
    "gravity_from_pitch_roll",
    "intrinsics_matrix",
    "largest_cluster_mask",
    "mean_knn_distance",
    "mean_knn_distance_naive",
    "measure_object",
    "min_area_rectangle",
    "min_area_rectangle_naive",
    "object_confidence",
    "oriented_box",
    "pitch_roll_from_gravity",
    "project",
    "radius_components",
    "radius_components_naive",
    "relate",
    "remove_outliers",
    "rotation_cam_from_canonical",
    "round_prior_axis",
    "statistical_inlier_mask",
    "unproject",
    "unproject_masked",
    "valid_depth_mask",
    "wrap_half_turn",
]
