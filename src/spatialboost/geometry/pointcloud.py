"""Per-object point-cloud cleaning: a statistical outlier filter, then the largest cluster.

Masks from a segmenter bleed onto the background at object borders and depth maps fly
pixels at depth edges; both leave isolated points and small detached clumps behind the object.
Every function takes (N, 3) points in metres (any frame) and returns per-point arrays, so the
caller keeps its own indexing.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class OutlierParams:
    """Settings of `remove_outliers`.

    Faces seen at grazing angles are sampled very unevenly (image rows far apart in depth,
    pixels close along a row, a lone pixel at the far edge), and those sparse points are the
    ones that fix a box's extent. The defaults are set so that clean depth-map samples of
    boxes stay whole: on 84 ray-cast boxes (world-config camera and size ranges) the sparsest
    point of an object has up to ~10x the median spacing (99th percentile), and linking every
    object into one component needs up to ~2.2x its typical radius.

    enabled: False keeps every finite point (exact depth and masks, e.g. the world dataset).
    k_neighbors: neighbours in the mean kNN distance ("spacing"); small, so that it measures
        the along-row spacing, which stays normal on grazing faces.
    std_ratio, min_spacing_ratio: a point is an outlier when its spacing exceeds both
        mean + std_ratio * std and min_spacing_ratio * median of all spacings (the floor keeps
        a very uniform cloud, std ~ 0, from losing its merely sparser points).
    cluster_spacing_scale, cluster_extent_scale: the cluster step links points closer than
        max(cluster_spacing_scale * median spacing, cluster_extent_scale * typical radius),
        the typical radius being the median distance of the points to their median point.
        Relative, so scaling the cloud changes nothing and far objects (pixel footprint
        ~ Z / f) are treated like near ones. Clumps about an object diameter or more away
        (mask bleed onto the background) are dropped.
    cluster_radius_m: a fixed linking radius, metres; overrides the relative one when set.
    """

    enabled: bool = True
    k_neighbors: int = 4
    std_ratio: float = 2.0
    min_spacing_ratio: float = 10.0
    cluster_spacing_scale: float = 4.0
    cluster_extent_scale: float = 2.5
    cluster_radius_m: float | None = None

    def __post_init__(self) -> None:
        scales = (self.std_ratio, self.min_spacing_ratio, self.cluster_spacing_scale)
        if self.k_neighbors < 1 or min(scales) <= 0 or self.cluster_extent_scale < 0:
            raise ValueError(
                "needs k_neighbors >= 1, positive std_ratio, min_spacing_ratio and cluster_spacing_scale, "
                "and cluster_extent_scale >= 0"
            )
        if self.cluster_radius_m is not None and self.cluster_radius_m <= 0:
            raise ValueError(f"cluster_radius_m must be positive, got {self.cluster_radius_m}")


def mean_knn_distance(points: np.ndarray, k: int) -> np.ndarray:
    """(N,) mean distance of each point to its k nearest other points, metres (k-d tree).

    With N <= k every other point is used; a single point gets 0.
    """
    points = _as_cloud(points)
    k_eff = min(k, len(points) - 1)
    if k_eff < 1:
        return np.zeros(len(points))
    distances, _ = cKDTree(points).query(points, k=k_eff + 1)  # column 0 is the point itself
    return distances[:, 1:].mean(axis=1)


def mean_knn_distance_naive(points: np.ndarray, k: int) -> np.ndarray:
    """Reference for `mean_knn_distance`: the full (N, N) distance matrix, sorted. O(N^2) memory."""
    points = _as_cloud(points)
    k_eff = min(k, len(points) - 1)
    if k_eff < 1:
        return np.zeros(len(points))
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    return np.sort(distances, axis=1)[:, 1 : k_eff + 1].mean(axis=1)


def statistical_inlier_mask(
    points: np.ndarray, k: int = 4, std_ratio: float = 2.0, min_spacing_ratio: float = 10.0
) -> np.ndarray:
    """(N,) bool over (N, 3) points: False where the mean kNN distance ("spacing") exceeds both
    mean + std_ratio * std and min_spacing_ratio * median of all spacings."""
    spacing = mean_knn_distance(points, k)
    if len(spacing) == 0:
        return np.zeros(0, dtype=bool)
    limit = max(spacing.mean() + std_ratio * spacing.std(), min_spacing_ratio * np.median(spacing))
    return spacing <= limit


def radius_components(points: np.ndarray, radius_m: float) -> np.ndarray:
    """(N,) int component labels, numbered in order of first appearance: points at most
    `radius_m` (metres) apart are linked. Exactly `radius_components_naive`, same distance formula.

    An object's cluster radius is ~2.5x its typical radius, so nearly every pair links and a
    pair list is O(N^2). Instead points are binned into cells whose diagonal is below the radius
    (all points of a cell link), and only neighbouring cells are tested for one linking pair.
    """
    points = _as_cloud(points)
    if not radius_m >= 0:
        raise ValueError(f"radius_m must be >= 0, got {radius_m}")
    if len(points) <= 1 or np.isinf(radius_m):
        return np.zeros(len(points), dtype=np.int64)
    grid = _LinkGrid.build(points, radius_m)
    if grid is None or grid.few_pairs():
        labels = _components(len(points), _linked_pairs(points, radius_m))
    else:
        labels = grid.cell_labels()[grid.cell_of_point]
    return _first_appearance_order(labels)


def radius_components_naive(points: np.ndarray, radius_m: float) -> np.ndarray:
    """Reference for `radius_components`: breadth-first search over the dense distance matrix."""
    points = _as_cloud(points)
    linked = _within(points[:, None, :], points[None, :, :], radius_m)  # (N, N)
    labels = np.full(len(points), -1, dtype=np.int64)
    for seed in range(len(points)):
        if labels[seed] >= 0:
            continue
        label = labels.max() + 1
        labels[seed] = label
        queue = deque([seed])
        while queue:
            for neighbour in np.flatnonzero(linked[queue.popleft()] & (labels < 0)):
                labels[neighbour] = label
                queue.append(neighbour)
    return labels


# Cell side r / sqrt(3), shrunk by _CELL_MARGIN: the cell diagonal stays below r even with the
# rounding of the cell index, which is at most ~_MAX_CELL_INDEX * 2^-52 cells (< margin / 2).
_CELL_MARGIN = 1e-6
_MAX_CELL_INDEX = 2**30
# Two cells 3 indices apart along an axis are > 2 sides = 1.15 r apart, so a linking pair
# needs every index difference in -2..2: 124 neighbours, 62 up to symmetry.
_OFFSETS = np.array([d for d in itertools.product(range(-2, 3), repeat=3) if d > (0, 0, 0)])  # (62, 3)
# Cell pairs with at most this many point pairs are decided in one vectorised pass; larger
# ones one at a time with k-d trees, skipped once already connected.
_SMALL_CELL_PAIR = 64
# Below this many squared cell counts per point a plain list of linked pairs is faster.
_FEW_PAIRS_PER_POINT = 8
# k-d tree distances differ from the exact formula in the last bits: search a little wider.
_TREE_SLACK = 1e-9


@dataclass(frozen=True)
class _LinkGrid:
    """Points sorted into linking cells: cell c holds sorted_points[starts[c] : starts[c] + counts[c]]."""

    sorted_points: np.ndarray  # (N, 3) metres, grouped by cell
    cell_of_point: np.ndarray  # (N,) cell index of each input point
    keys: np.ndarray  # (C,) int64 linear cell index, increasing
    starts: np.ndarray  # (C,)
    counts: np.ndarray  # (C,)
    strides: np.ndarray  # (3,) linear index step per axis
    radius_m: float

    @classmethod
    def build(cls, points: np.ndarray, radius_m: float) -> _LinkGrid | None:
        """The grid, or None when the radius is 0 or tiny against the cloud's extent."""
        side = radius_m / np.sqrt(3.0) * (1.0 - _CELL_MARGIN)
        if side <= 0:
            return None
        with np.errstate(over="ignore"):
            index = np.floor((points - points.min(axis=0)) / side)  # (N, 3)
        if not index.max() <= _MAX_CELL_INDEX:
            return None
        shape = index.max(axis=0).astype(np.int64) + 5  # 2 cells of padding each side: no wrap-around
        if np.prod(shape.astype(float)) >= 2.0**62:
            return None
        strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
        point_keys = (index.astype(np.int64) + 2) @ strides
        order = np.argsort(point_keys, kind="stable")
        keys, starts, cell_of_sorted, counts = np.unique(
            point_keys[order], return_index=True, return_inverse=True, return_counts=True
        )
        cell_of_point = np.empty(len(points), dtype=np.int64)
        cell_of_point[order] = cell_of_sorted
        return cls(points[order], cell_of_point, keys, starts, counts, strides, radius_m)

    def few_pairs(self) -> bool:
        """Whether listing every linked pair is cheaper: cells of ~1 point. Linked pairs number
        at least sum(n_c^2 - n_c) / 2 and at most ~63 sum(n_c^2) (n_c: points in cell c)."""
        return int(np.sum(self.counts**2)) <= _FEW_PAIRS_PER_POINT * len(self.sorted_points)

    def cell_labels(self) -> np.ndarray:
        """(C,) component label of each cell."""
        pairs, gaps = self._neighbour_pairs()
        small = self.counts[pairs[:, 0]] * self.counts[pairs[:, 1]] <= _SMALL_CELL_PAIR
        labels = np.arange(len(self.keys))
        # Nearest cells first (they link most often); pairs already connected need no test.
        for gap in range(4):
            batch = pairs[small & (gaps == gap)]
            batch = batch[labels[batch[:, 0]] != labels[batch[:, 1]]]
            joined = labels[batch[self._small_pairs_linked(batch)]]  # (E, 2) component pairs
            labels = _components(labels.max() + 1, joined)[labels]
        large = pairs[~small][np.argsort(gaps[~small], kind="stable")]
        large = large[labels[large[:, 0]] != labels[large[:, 1]]]
        return self._join_large_pairs(labels, large)

    def _neighbour_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(P, 2) occupied cell pairs (a, b) that may link, and (P,) their minimum gap in cells^2."""
        wanted = (_OFFSETS @ self.strides)[:, None] + self.keys  # (62, C), each row increasing: fast search
        found = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        offset, a = np.nonzero(self.keys[found] == wanted)
        gaps = (np.maximum(np.abs(_OFFSETS) - 1, 0) ** 2).sum(axis=1)  # (62,) in 0..3
        return np.stack([a, found[offset, a]], axis=1), gaps[offset]

    def _small_pairs_linked(self, pairs: np.ndarray) -> np.ndarray:
        """(P,) bool: some point of cell a is within the radius of some point of cell b."""
        n_a, n_b = self.counts[pairs[:, 0]], self.counts[pairs[:, 1]]
        sizes = n_a * n_b
        pair = np.repeat(np.arange(len(pairs)), sizes)  # one entry per point pair
        rank = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        i = self.starts[pairs[pair, 0]] + rank // n_b[pair]
        j = self.starts[pairs[pair, 1]] + rank % n_b[pair]
        close = _within(self.sorted_points[i], self.sorted_points[j], self.radius_m)
        return np.bincount(pair[close], minlength=len(pairs)) > 0

    def _join_large_pairs(self, labels: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Union-find over the components in `labels`, testing each pair only while it is apart."""
        parent = np.arange(labels.max() + 1)

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        trees: dict[int, cKDTree] = {}
        for a, b in pairs.tolist():
            root_a, root_b = root(labels[a]), root(labels[b])
            if root_a != root_b and self._cells_touch(a, b, trees):
                parent[root_a] = root_b
        while not np.array_equal(parent[parent], parent):  # point every component at its root
            parent = parent[parent]
        return parent[labels]

    def _cells_touch(self, a: int, b: int, trees: dict[int, cKDTree]) -> bool:
        """Whether some point of cell a is within the radius of some point of cell b."""
        if self.counts[a] > self.counts[b]:
            a, b = b, a  # query the smaller cell against the larger one's tree
        queries, targets = self._cell_points(a), self._cell_points(b)
        if b not in trees:
            trees[b] = cKDTree(targets)
        _, nearest = trees[b].query(queries, distance_upper_bound=self.radius_m * (1 + _TREE_SLACK))
        found = nearest < len(targets)
        if np.any(_within(queries[found], targets[nearest[found]], self.radius_m)):
            return True
        # Left: near-ties within the slack, where the tree's nearest may not be the exact nearest.
        return bool(np.any(_within(queries[found][:, None, :], targets[None, :, :], self.radius_m)))

    def _cell_points(self, cell: int) -> np.ndarray:
        return self.sorted_points[self.starts[cell] : self.starts[cell] + self.counts[cell]]


def _linked_pairs(points: np.ndarray, radius_m: float) -> np.ndarray:
    """(P, 2) all linked point pairs: k-d tree candidates, kept by the exact distance formula."""
    pairs = cKDTree(points).query_pairs(radius_m * (1 + _TREE_SLACK), output_type="ndarray")  # (P, 2)
    return pairs[_within(points[pairs[:, 0]], points[pairs[:, 1]], radius_m)]


def _within(a: np.ndarray, b: np.ndarray, radius_m: float) -> np.ndarray:
    """Whether points a and b (broadcast, (..., 3)) are linked. The one distance formula of the
    fast and the naive paths, so pairs at exactly the radius are decided alike."""
    return np.linalg.norm(a - b, axis=-1) <= radius_m


def _components(n: int, edges: np.ndarray) -> np.ndarray:
    """(n,) connected-component labels of the undirected graph with (E, 2) `edges`."""
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _first_appearance_order(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, ... in the order their first point appears."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def largest_cluster_mask(points: np.ndarray, radius_m: float) -> np.ndarray:
    """(N,) bool: the largest radius-linked component (ties: the one holding the lowest index)."""
    labels = radius_components(points, radius_m)
    if len(labels) == 0:
        return np.zeros(0, dtype=bool)
    sizes = np.bincount(labels)
    first_of_largest = np.flatnonzero(sizes[labels] == sizes.max())[0]
    return labels == labels[first_of_largest]


def remove_outliers(points: np.ndarray, params: OutlierParams | None = None) -> np.ndarray:
    """(N,) bool kept mask over (N, 3) points, metres: finite, statistical inlier, largest cluster.

    Empty input gives an empty mask. The result is unchanged when all points are scaled by a
    positive factor (unless `cluster_radius_m` fixes the radius).
    """
    params = params or OutlierParams()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    kept = np.isfinite(points).all(axis=1)
    finite_index = np.flatnonzero(kept)
    if not params.enabled or len(finite_index) <= 2:
        return kept
    cloud = points[finite_index]
    inlier = statistical_inlier_mask(cloud, params.k_neighbors, params.std_ratio, params.min_spacing_ratio)
    radius = params.cluster_radius_m
    if radius is None:
        radius = cluster_radius(cloud[inlier], params)
    cluster = np.zeros(len(cloud), dtype=bool)
    # A radius of 0 (all inliers coincide) links only duplicates: keep the statistical inliers.
    cluster[inlier] = largest_cluster_mask(cloud[inlier], radius) if radius > 0 else True
    kept[finite_index] = cluster
    return kept


def cluster_radius(points: np.ndarray, params: OutlierParams) -> float:
    """The relative linking radius of `remove_outliers` for (N, 3) finite points, metres."""
    spacing = float(np.median(mean_knn_distance(points, params.k_neighbors)))
    typical_radius = float(np.median(np.linalg.norm(points - np.median(points, axis=0), axis=1)))
    return max(params.cluster_spacing_scale * spacing, params.cluster_extent_scale * typical_radius)


def _as_cloud(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points must be finite (drop NaN rows first, e.g. with remove_outliers)")
    return points
