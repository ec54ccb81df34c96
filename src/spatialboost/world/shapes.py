"""The seven shape classes: exact ray intersection, an inside test, and size sampling.

Every shape lives in its own local frame: origin at the centre of its tight box, axes along
the box, z up. A shape is fully determined by the box half-sizes `half = (hx, hy, hz)` (metres):

    cube       half-side hx = hy = hz
    sphere     radius hx = hy = hz
    ellipsoid  semi-axes hx, hy, hz
    cylinder   radius hx = hy, half-height hz (axis z)
    cone       base radius hx = hy at z = -hz, apex at z = +hz
    pyramid    square base of half-side hx = hy at z = -hz, apex at z = +hz
    capsule    lying along x: radius hy = hz, caps centred at x = +-(hx - hy)

`intersect(o, d, half)` takes ray origins o (N, 3) or (3,) and directions d (N, 3) (any
non-zero length) in the local frame and returns (t, normal): t (N,) float64, the smallest
ray parameter > EPS where p = o + t d lies on the surface (inf on a miss), and normal (N, 3),
the unit outward normal there (zeros on a miss). `inside(p, half)` -> (N,) bool is the
independent implicit definition the intersections are tested against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPS = 1e-9
"""Smallest accepted ray parameter, so a ray leaving a surface does not hit it again."""

Hit = tuple[np.ndarray, np.ndarray]

# Misses divide by zero and multiply inf by 0 on purpose; the results are masked out.
_quiet = np.errstate(divide="ignore", invalid="ignore", over="ignore")


def _first_hit(candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> Hit:
    """Nearest valid candidate per ray. Each candidate is (t (N,), valid (N,), normal (N, 3))."""
    t_best = np.full(n, np.inf)
    normal = np.zeros((n, 3))
    for t, valid, nrm in candidates:
        better = valid & (t > EPS) & (t < t_best)
        t_best = np.where(better, t, t_best)
        normal[better] = nrm[better]
    return t_best, normal


def _quadratic_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both real roots of a t^2 + b t + c = 0 (NaN where none); linear where a ~ 0."""
    disc = b * b - 4.0 * a * c
    sq = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
    linear = np.abs(a) < 1e-12
    safe_a = np.where(linear, 1.0, a)
    t0 = np.where(linear, -c / np.where(b == 0.0, np.nan, b), (-b - sq) / (2.0 * safe_a))
    t1 = np.where(linear, np.nan, (-b + sq) / (2.0 * safe_a))
    return t0, t1


def _normalised(v: np.ndarray, fallback: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(norm > 0.0, v / np.where(norm > 0.0, norm, 1.0), np.asarray(fallback))


@_quiet
def intersect_convex(o: np.ndarray, d: np.ndarray, normals: np.ndarray, offsets: np.ndarray) -> Hit:
    """First hit with the convex polyhedron {p : normals @ p <= offsets}; normals (P, 3) unit."""
    o, d = np.broadcast_arrays(np.atleast_2d(o), d)
    num = offsets[None, :] - o @ normals.T  # (N, P), > 0 where the origin is inside the plane
    den = d @ normals.T  # (N, P)
    t_plane = num / den
    entering, exiting = den < 0.0, den > 0.0
    t_in = np.where(entering, t_plane, -np.inf)
    t_out = np.where(exiting, t_plane, np.inf)
    parallel_outside = ((den == 0.0) & (num < 0.0)).any(axis=1)
    enter_plane, exit_plane = t_in.argmax(axis=1), t_out.argmin(axis=1)
    t_enter, t_exit = t_in.max(axis=1), t_out.min(axis=1)
    crosses = (t_enter <= t_exit) & ~parallel_outside
    return _first_hit(
        [
            (t_enter, crosses, normals[enter_plane]),
            (t_exit, crosses & (t_enter <= EPS), normals[exit_plane]),
        ],
        len(d),
    )


@_quiet
def intersect_cube(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Axis-aligned box |p_i| <= half_i (a cube when the half-sizes are equal)."""
    normals = np.concatenate([np.eye(3), -np.eye(3)])
    return intersect_convex(o, d, normals, np.concatenate([half, half]))


def pyramid_planes(half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit outward normals (5, 3) and offsets (5,) of the pyramid's base and four faces."""
    a, height = half[0], 2.0 * half[2]
    sides = np.array([[height, 0, a], [-height, 0, a], [0, height, a], [0, -height, a]], dtype=float)
    scale = np.linalg.norm(sides, axis=1)
    normals = np.concatenate([[[0.0, 0.0, -1.0]], sides / scale[:, None]])
    offsets = np.concatenate([[half[2]], a * height / 2.0 / scale])
    return normals, offsets


@_quiet
def intersect_pyramid(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Square pyramid, apex up."""
    return intersect_convex(o, d, *pyramid_planes(half))


@_quiet
def intersect_ellipsoid(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Ellipsoid sum((p / half)^2) = 1: a unit sphere after scaling the axes (t is unchanged)."""
    o, d = np.broadcast_arrays(np.atleast_2d(o), d)
    os_, ds = o / half, d / half
    t0, t1 = _quadratic_roots((ds * ds).sum(1), 2.0 * (os_ * ds).sum(1), (os_ * os_).sum(1) - 1.0)
    cands = []
    for t in (t0, t1):
        p = o + t[:, None] * d
        cands.append((t, np.isfinite(t), _normalised(p / half**2)))
    return _first_hit(cands, len(d))


@_quiet
def intersect_sphere(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Sphere of radius half[0] (half-sizes are equal): the ellipsoid with equal axes."""
    return intersect_ellipsoid(o, d, np.full(3, half[0]))


def _tube(o: np.ndarray, d: np.ndarray, r: float, axis: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Both crossings (t (N,), point (N, 3), normal (N, 3)) of the infinite tube of radius r
    about a coordinate axis."""
    across = np.ones(3)
    across[axis] = 0.0
    oa, da = o * across, d * across
    out = []
    for t in _quadratic_roots((da * da).sum(1), 2.0 * (oa * da).sum(1), (oa * oa).sum(1) - r * r):
        p = o + t[:, None] * d
        out.append((t, p, _normalised(p * across)))
    return out


@_quiet
def intersect_cylinder(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Capped cylinder about z: x^2 + y^2 <= r^2, |z| <= h."""
    o, d = np.broadcast_arrays(np.atleast_2d(o), d)
    r, h = half[0], half[2]
    cands = [(t, np.abs(p[:, 2]) <= h, normal) for t, p, normal in _tube(o, d, r, axis=2)]
    for sign in (1.0, -1.0):
        t = (sign * h - o[:, 2]) / d[:, 2]
        p = o + t[:, None] * d
        cap = np.broadcast_to([0.0, 0.0, sign], p.shape)
        cands.append((t, p[:, 0] ** 2 + p[:, 1] ** 2 <= r * r, cap))
    return _first_hit(cands, len(d))


@_quiet
def intersect_cone(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Cone about z, base radius r at z = -h, apex at z = +h: x^2 + y^2 = (k w)^2, w = h - z."""
    o, d = np.broadcast_arrays(np.atleast_2d(o), d)
    r, h = half[0], half[2]
    k2 = (r / (2.0 * h)) ** 2
    w0 = h - o[:, 2]  # w along the ray is w0 - t dz
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = 2.0 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] + k2 * w0 * d[:, 2])
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w0**2
    cands = []
    for t in _quadratic_roots(a, b, c):
        p = o + t[:, None] * d
        w = h - p[:, 2]
        grad = np.stack([p[:, 0], p[:, 1], k2 * w], axis=1)
        cands.append((t, (w >= 0.0) & (w <= 2.0 * h), _normalised(grad)))
    t = (-h - o[:, 2]) / d[:, 2]
    p = o + t[:, None] * d
    cands.append((t, p[:, 0] ** 2 + p[:, 1] ** 2 <= r * r, np.broadcast_to([0.0, 0.0, -1.0], p.shape)))
    return _first_hit(cands, len(d))


@_quiet
def intersect_capsule(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> Hit:
    """Capsule along x: points within r = half[1] of the segment x in [-(hx - r), hx - r]."""
    o, d = np.broadcast_arrays(np.atleast_2d(o), d)
    r = half[1]
    hc = half[0] - r
    cands = [(t, np.abs(p[:, 0]) <= hc, normal) for t, p, normal in _tube(o, d, r, axis=0)]
    for sign in (1.0, -1.0):
        centre = np.array([sign * hc, 0.0, 0.0])
        oc = o - centre
        roots = _quadratic_roots((d * d).sum(1), 2.0 * (oc * d).sum(1), (oc * oc).sum(1) - r * r)
        for t in roots:
            p = o + t[:, None] * d
            cands.append((t, sign * p[:, 0] >= hc, _normalised(p - centre)))
    return _first_hit(cands, len(d))


# Inside tests: the implicit definitions, written independently of the intersections above.


def inside_cube(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    return (np.abs(p) <= half).all(axis=-1)


def inside_ellipsoid(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    return ((p / half) ** 2).sum(axis=-1) <= 1.0


def inside_cylinder(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    return (p[..., 0] ** 2 + p[..., 1] ** 2 <= half[0] ** 2) & (np.abs(p[..., 2]) <= half[2])


def inside_cone(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    frac = (half[2] - p[..., 2]) / (2.0 * half[2])  # 1 at the base, 0 at the apex
    return (frac >= 0.0) & (frac <= 1.0) & (np.hypot(p[..., 0], p[..., 1]) <= half[0] * frac)


def inside_pyramid(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    frac = (half[2] - p[..., 2]) / (2.0 * half[2])
    side = half[0] * frac
    return (frac >= 0.0) & (frac <= 1.0) & (np.abs(p[..., 0]) <= side) & (np.abs(p[..., 1]) <= side)


def inside_capsule(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    r = half[1]
    nearest_x = np.clip(p[..., 0], -(half[0] - r), half[0] - r)
    return (p[..., 0] - nearest_x) ** 2 + p[..., 1] ** 2 + p[..., 2] ** 2 <= r * r


# Sizes: full box extents (x, y, z) in metres whose largest value is `extent`.


def _scaled(dims: tuple[float, float, float], extent: float) -> tuple[float, float, float]:
    scale = extent / max(dims)
    return (dims[0] * scale, dims[1] * scale, dims[2] * scale)


def size_equal(extent: float, rng: np.random.Generator) -> tuple[float, float, float]:
    return (extent, extent, extent)


def size_upright(low: float, high: float) -> Callable[[float, np.random.Generator], tuple[float, float, float]]:
    """Round or square footprint with height / base width drawn from [low, high]."""

    def size(extent: float, rng: np.random.Generator) -> tuple[float, float, float]:
        return _scaled((1.0, 1.0, float(rng.uniform(low, high))), extent)

    return size


def size_ellipsoid(extent: float, rng: np.random.Generator) -> tuple[float, float, float]:
    return _scaled(tuple(float(x) for x in rng.uniform(0.35, 1.0, size=3)), extent)  # type: ignore[arg-type]


def size_capsule(extent: float, rng: np.random.Generator) -> tuple[float, float, float]:
    diameter = 1.0 / float(rng.uniform(1.5, 4.0))  # length / diameter, caps included
    return _scaled((1.0, diameter, diameter), extent)


@dataclass(frozen=True)
class ShapeKind:
    """One shape class: its exact intersection, its implicit inside test, its size sampler."""

    intersect: Callable[[np.ndarray, np.ndarray, np.ndarray], Hit]
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]
    sample_size: Callable[[float, np.random.Generator], tuple[float, float, float]]


SHAPES: dict[str, ShapeKind] = {
    "cube": ShapeKind(intersect_cube, inside_cube, size_equal),
    "sphere": ShapeKind(intersect_sphere, inside_ellipsoid, size_equal),
    "cylinder": ShapeKind(intersect_cylinder, inside_cylinder, size_upright(0.4, 2.0)),
    "cone": ShapeKind(intersect_cone, inside_cone, size_upright(0.6, 2.0)),
    "pyramid": ShapeKind(intersect_pyramid, inside_pyramid, size_upright(0.5, 1.5)),
    "ellipsoid": ShapeKind(intersect_ellipsoid, inside_ellipsoid, size_ellipsoid),
    "capsule": ShapeKind(intersect_capsule, inside_capsule, size_capsule),
}
"""Every class in config.SHAPE_CLASSES (a test checks the keys match)."""
