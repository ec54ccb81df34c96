"""Bytes and time of the stored depth maps (extract/depth_maps.py) at the demo's and the paper's sizes.

    PYTHONPATH=src python benchmarks/depth_storage.py     # writes benchmarks/results/depth_storage.{json,md}

Depth maps: world renders (exact metric z-depth: planes, smooth shapes, sharp edges) at 128x128
(the demo) and 1536x1152 (SA-1B-class images, ~1500 px on the long side), and two noisy
versions of them, since a model's map has texture an exact render lacks. No Depth Pro weights
can be fetched here, so real Depth Pro maps are not measured: the three variants bracket them.

- `exact`: the render's depth;
- `smooth noise`: depth x (1 + 0.5% x a random walk along each row / sqrt(W)): low-frequency
  error of about 0.5% that PNG's row filters can predict;
- `white noise`: depth x (1 + 0.5% x N(0, 1) per pixel): the worst case, every code's low bits
  random.

Per map: the PNG-16 log-depth payload as shipped (zlib level `PNG_COMPRESS_LEVEL`), the same
at levels 1 and 6, float16 + zlib 6 (an .npz-like alternative) and raw float32; encode and
decode milliseconds (best of --repeats); the RGB as JPEG quality 90 for scale; and the shard
archive's size against the sum of its payloads (zip overhead).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from spatialboost.config import WorldConfig
from spatialboost.data.rgbd import RGBDDataset
from spatialboost.extract.depth_maps import (
    PNG_COMPRESS_LEVEL,
    decode_depth,
    depth_codes,
    depth_map_ref,
    encode_depth,
    max_relative_error,
    write_depth_archive,
)
from spatialboost.world import render_dataset

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ((128, 128, 32), (1536, 1152, 3))  # width, height, images


def variants(depth: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    width = depth.shape[1]
    walk = np.cumsum(rng.standard_normal(depth.shape), axis=1) / np.sqrt(width)
    return {
        "exact": depth,
        "smooth noise": (depth * (1 + 0.005 * walk)).astype(np.float32),
        "white noise": (depth * (1 + 0.005 * rng.standard_normal(depth.shape))).astype(np.float32),
    }


def best_ms(run, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def png_level(depth: np.ndarray, level: int) -> int:
    buffer = io.BytesIO()
    Image.fromarray(depth_codes(depth)).save(buffer, "PNG", compress_level=level)
    return len(buffer.getvalue())


def measure_size(width: int, height: int, n: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        render_dataset(WorldConfig(n_train=0, n_test=n, width=width, height=height), tmp, progress=False)
        dataset = RGBDDataset(tmp)
        rng = np.random.default_rng(0)
        rows: dict[str, list[dict]] = {}
        payloads: dict[str, dict[str, bytes]] = {}
        jpeg = []
        for image_id in dataset.ids():
            buffer = io.BytesIO()
            Image.fromarray(dataset.rgb(image_id)).save(buffer, "JPEG", quality=90)
            jpeg.append(len(buffer.getvalue()))
            for name, depth in variants(dataset.depth(image_id), rng).items():
                payload = encode_depth(depth)
                ref = depth_map_ref("x.depth.zip", payload)
                payloads.setdefault(name, {})[ref.sha256] = payload
                back = decode_depth(payload, ref)
                valid = depth > 0
                rows.setdefault(name, []).append({
                    "shipped": len(payload),
                    "level_1": png_level(depth, 1),
                    "level_6": png_level(depth, 6),
                    "float16_zlib": len(zlib.compress(depth.astype(np.float16).tobytes(), 6)),
                    "float32_raw": depth.nbytes,
                    "encode_ms": best_ms(lambda d=depth: encode_depth(d), repeats),
                    "level_6_encode_ms": best_ms(lambda d=depth: png_level(d, 6), repeats),
                    "decode_ms": best_ms(lambda p=payload, r=ref: decode_depth(p, r), repeats),
                    "max_rel_error": float(np.max(np.abs(back[valid] / depth[valid] - 1))),
                })  # fmt: skip
        archives = {}
        for name, members in payloads.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.zip"
            write_depth_archive(path, members)
            archives[name] = {"archive_bytes": path.stat().st_size, "payload_bytes": sum(map(len, members.values()))}
    pixels = width * height
    summary = {}
    for name, items in rows.items():
        mean = {key: float(np.mean([item[key] for item in items])) for key in items[0]}
        mean["max_rel_error"] = max(item["max_rel_error"] for item in items)
        mean["shipped_bytes_per_pixel"] = mean["shipped"] / pixels
        summary[name] = {**mean, **archives[name]}
    return {"width": width, "height": height, "n_images": n, "jpeg_q90_bytes": float(np.mean(jpeg)), "variants": summary}


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "load_average_1min": os.getloadavg()[0],
    }


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Stored depth maps: bytes and time",
        "",
        f"{result['date']}, {m['platform']}, {m['cpu_count']} CPUs (1-min load {m['load_average_1min']:.1f} at start),",
        f"Python {m['python']}, numpy {m['numpy']}, Pillow {m['pillow']}. `python benchmarks/depth_storage.py`.",
        f"Encoding png16-log (16-bit log-depth codes over [1 mm, 10 km], zlib level {PNG_COMPRESS_LEVEL}); bound on the",
        f"relative error {result['max_relative_error_bound']:.3g}. Means per image; times best of {result['repeats']}.",
        "Depth: world renders (`exact`) and two noisy versions standing in for a model's texture (the",
        "benchmark's docstring); real Depth Pro maps were not measured (no weights offline).",
        "",
        "| size | depth | shipped KB | B/px | encode ms | decode ms | level 1 KB | level 6 KB | level 6 encode ms | float16+zlib KB | float32 KB | max rel. error | JPEG q90 KB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for name, v in run["variants"].items():
            lines.append(
                f"| {run['width']}x{run['height']} | {name} | {v['shipped'] / 1e3:.1f} | {v['shipped_bytes_per_pixel']:.3f} "
                f"| {v['encode_ms']:.1f} | {v['decode_ms']:.1f} | {v['level_1'] / 1e3:.1f} | {v['level_6'] / 1e3:.1f} "
                f"| {v['level_6_encode_ms']:.1f} | {v['float16_zlib'] / 1e3:.1f} | {v['float32_raw'] / 1e3:.0f} "
                f"| {v['max_rel_error']:.2e} | {run['jpeg_q90_bytes'] / 1e3:.1f} |"
            )
    overhead = [
        (run["width"], v["archive_bytes"] / v["payload_bytes"] - 1) for run in result["runs"] for v in run["variants"].values()
    ]
    lines += ["", "Zip overhead over the payloads: " + ", ".join(f"{w} px {o:.2%}" for w, o in overhead) + "."]
    lines += [
        "",
        "Reading: at the paper's size a map costs 0.1 B/px exact to ~1 B/px with per-pixel noise, i.e. from half",
        "to five times the image's own JPEG; the demo's 128 px maps are a few KB. zlib level 3 (shipped) against 6:",
        "15-35% more bytes on smooth maps, 1.4-3x less encode time; level 1 buys little more speed. float16 + zlib",
        "is smaller on noisy maps only because it keeps half the precision (11-bit mantissa, 2.4e-4 relative",
        "error, inf above 65504 m) and is no image format. Encoding runs in the extract shard task after the",
        "forwards: at 1536 px its 0.15-0.4 s per map on this shared CPU is of the order of a Depth Pro forward",
        "on an H200 (0.1 s, extract_gpu.md), so it counts in paper-scale throughput (not measured there).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings per map; the best is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine()
    runs = []
    for width, height, n in SIZES:
        runs.append(measure_size(width, height, n, args.repeats))
        shipped = runs[-1]["variants"]["exact"]["shipped"]
        print(f"{width}x{height}: exact {shipped / 1e3:.1f} KB per map")
    result = {
        "benchmark": "depth_storage",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "repeats": args.repeats,
        "max_relative_error_bound": max_relative_error(),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "depth_storage.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "depth_storage.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
