"""What the synthesised data looks like: statistics (JSON + PNG) and sample renderings (PNG).

    stats = conversation_stats(sidecar_records)        # question types, labels, distances, balance
    write_stats_png("stats.png", stats)
    write_sample_png("samples/test-000001.png", image, sidecar_record)

Balance figures: `yes_no.yes_fraction` over every yes/no answer, `letters.A_fraction` over
every two-option A/B answer (points or objects), `sides` over relation choices; each should be
near 0.5 (the generators flip question polarity and option order at random).
"""

from __future__ import annotations

import io
import os
import textwrap
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from spatialboost.io import write_bytes_atomic

DISTANCE_BINS_M = np.arange(0.0, 16.5, 0.5)
"""Histogram bins of numeric answers, metres (larger values land in the last bin)."""

NUMERIC_QTYPES = ("point_depth", "object_distance", "object_height", "distance_between")


def conversation_stats(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Statistics of sidecar records (formats.sidecar_record); pure, JSON-ready."""
    qtypes, levels, answer_types, units, labels, skipped = (
        Counter(),
        Counter(),
        Counter(),
        Counter(),
        Counter(),
        Counter(),
    )
    yes_no, letters, two_letters, sides = Counter(), Counter(), Counter(), Counter()
    numbers: dict[str, list[float]] = {q: [] for q in NUMERIC_QTYPES}
    turns_per, images, n_rationale, n_conv = [], set(), 0, 0
    for record in records:
        n_conv += 1
        images.add(record["image_id"])
        turns_per.append(len(record["turns"]))
        units[record["unit"]] += 1
        skipped.update(record.get("skipped", {}))
        names = {obj["object_id"]: obj["label"] for obj in record.get("objects", [])}
        for turn in record["turns"]:
            qtypes[turn["qtype"]] += 1
            levels[turn["level"]] += 1
            answer_types[turn["answer_type"]] += 1
            n_rationale += bool(turn["rationale"])
            if turn["level"] != "caption":
                labels.update(names[i] for i in turn["object_ids"] if i in names)
            value = turn["value"]
            if turn["answer_type"] == "bool":
                yes_no["yes" if value else "no"] += 1
            elif turn["answer_type"] == "choice" and turn["choices"][0] in "ABCDEFGH":
                letters[value] += 1
                if len(turn["choices"]) == 2:
                    two_letters[value] += 1
            elif turn["answer_type"] == "choice":
                sides[value] += 1
            if turn["qtype"] in numbers:
                numbers[turn["qtype"]].append(float(value))
    n_turns = sum(turns_per)
    return {
        "conversations": n_conv,
        "images": len(images),
        "turns": n_turns,
        "turns_per_conversation": _summary(turns_per),
        "levels": dict(sorted(levels.items())),
        "question_types": dict(sorted(qtypes.items())),
        "answer_types": dict(sorted(answer_types.items())),
        "units": dict(sorted(units.items())),
        "labels": dict(sorted(labels.items())),
        "numeric_answers_m": {q: _histogram(v) for q, v in numbers.items()},
        "yes_no": {**dict(sorted(yes_no.items())), "yes_fraction": _fraction(yes_no["yes"], sum(yes_no.values()))},
        "letters": {
            **dict(sorted(letters.items())),
            "A_fraction": _fraction(two_letters["A"], sum(two_letters.values())),
        },
        "sides": dict(sorted(sides.items())),
        "with_rationale": {"turns": n_rationale, "fraction": _fraction(n_rationale, n_turns)},
        "skipped": dict(sorted(skipped.items())),
    }


def _fraction(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "min": 0, "max": 0}
    return {"mean": float(np.mean(values)), "min": int(min(values)), "max": int(max(values))}


def _histogram(values: list[float]) -> dict[str, Any]:
    clipped = np.minimum(np.asarray(values, dtype=float), DISTANCE_BINS_M[-1] - 1e-9)
    counts, _ = np.histogram(clipped, bins=DISTANCE_BINS_M)
    return {
        "n": len(values),
        "mean": float(np.mean(values)) if values else None,
        "bin_edges": DISTANCE_BINS_M.tolist(),
        "counts": counts.tolist(),
    }


def _figure_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def write_stats_png(path: str | os.PathLike[str], stats: dict[str, Any]) -> None:
    """Six panels: question types, labels, numeric answers, yes/no and A/B balance, levels,
    skip reasons."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    _bars(axes[0, 0], stats["question_types"], "question types", horizontal=True)
    _bars(axes[0, 1], stats["labels"], "labels of the objects asked about")
    ax = axes[0, 2]
    edges = np.asarray(DISTANCE_BINS_M)
    for qtype, hist in stats["numeric_answers_m"].items():
        if hist["n"]:
            ax.stairs(hist["counts"], edges, label=f"{qtype} (n={hist['n']})")
    ax.set_xlabel("metres")
    ax.set_title("numeric answers")
    ax.legend(fontsize=7)
    balance = {
        "yes": stats["yes_no"].get("yes", 0), "no": stats["yes_no"].get("no", 0),
        "A (of 2)": stats["letters"].get("A", 0), "B": stats["letters"].get("B", 0), **stats["sides"],
    }  # fmt: skip
    _bars(axes[1, 0], balance, "answer balance (yes/no, A/B, sides)")
    _bars(axes[1, 1], stats["levels"], f"turns per level ({stats['conversations']} conversations)")
    _bars(axes[1, 2], stats["skipped"] or {"none": 0}, "candidates skipped, by reason", horizontal=True)
    fig.tight_layout()
    write_bytes_atomic(path, _figure_bytes(fig))
    plt.close(fig)


def _bars(ax, counts: dict[str, int], title: str, horizontal: bool = False) -> None:
    names, values = list(counts), list(counts.values())
    if horizontal:
        ax.barh(names, values)
        ax.invert_yaxis()
    else:
        ax.bar(names, values)
        ax.tick_params(axis="x", rotation=45)
    ax.set_title(title)


def write_sample_png(path: str | os.PathLike[str], image: np.ndarray | None, record: dict[str, Any]) -> None:
    """The image with every object, point and 2D box the conversation mentions, and its text.

    image: (H, W, 3) uint8, or None (a grey canvas of the recorded size). record: one sidecar
    record. Objects get their 2D box and name; points a numbered marker (the turn that first
    mentions them); 2D boxes that disambiguate names a dashed outline.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    objects = {obj["object_id"]: obj for obj in record.get("objects", [])}
    if image is None:
        width = max((o["bbox"][2] for o in objects.values()), default=128)
        height = max((o["bbox"][3] for o in objects.values()), default=128)
        image = np.full((height, width, 3), 128, dtype=np.uint8)
    fig, (ax_img, ax_txt) = plt.subplots(1, 2, figsize=(16, 8), gridspec_kw={"width_ratios": [1, 1.3]})
    ax_img.imshow(image, interpolation="nearest")
    colours = plt.get_cmap("tab10")
    mentioned = []
    for turn in record["turns"]:
        mentioned += [i for i in turn["object_ids"] if i not in mentioned]
    for k, object_id in enumerate(mentioned):
        obj = objects.get(object_id)
        if obj is None:
            continue
        x0, y0, x1, y1 = obj["bbox"]
        colour = colours(k % 10)
        ax_img.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=colour))
        ax_img.text(
            x0,
            y0,
            obj["name"].removeprefix("the "),
            color=colour,
            fontsize=7,
            va="top",
            bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "lw": 0},
        )
    seen_points: dict[tuple[int, int], int] = {}
    for index, turn in enumerate(record["turns"]):
        for x, y in turn["points"]:
            seen_points.setdefault((x, y), index)
        for x0, y0, x1, y1 in turn["boxes"]:
            ax_img.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1, ls="--", ec="white"))
    radius = max(image.shape[:2]) / 80
    for (x, y), index in seen_points.items():
        ax_img.add_patch(Circle((x, y), radius, fc="yellow", ec="black", lw=0.8))
        ax_img.text(x + 1.5 * radius, y, str(index + 1), color="yellow", fontsize=8, fontweight="bold", va="center")
    ax_img.set_title(f"{record['id']} ({record['order']}, {record['unit']})")
    ax_img.axis("off")
    ax_txt.axis("off")
    lines = []
    for index, turn in enumerate(record["turns"]):
        tag = f"{index + 1}. [{turn['level']}/{turn['qtype']}]"
        lines += textwrap.wrap(f"{tag} Q: {turn['question']}", 110)
        lines += textwrap.wrap(f"A: {turn['answer']}", 110, initial_indent="    ", subsequent_indent="    ")
    ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=7, family="monospace", transform=ax_txt.transAxes)
    fig.tight_layout()
    write_bytes_atomic(path, _figure_bytes(fig))
    plt.close(fig)
