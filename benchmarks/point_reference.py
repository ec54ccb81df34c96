"""Can the boost's gradient reach the image token a question is about? Two measurements.

    python benchmarks/point_reference.py learn --refs pixel|norm|marks [--layers 2] [--steps 300]
    python benchmarks/point_reference.py locality --vlm models/bootstrap/vlm --data data/qa [--digits]
    python benchmarks/point_reference.py point-probe --vlm models/bootstrap/vlm

The boost stage freezes the LLM, so the encoder only learns what the frozen LLM's answer loss
sends back to the image tokens. "What is the depth at (107, 77)?" can teach the token at
(107, 77) about depth only if the gradient of the answer lands there.

`learn`: a fresh LLM + projector on the demo's frozen encoder, trained (instruct stage, the one
loop; --stage boost: the method instead, LLM frozen) on referring questions alone ("What is at the point P?" -> "... is on the red cube") for
--steps, P named by pixel coordinates, by normalised coordinates (LLaVA-1.5's region format) or
by a drawn mark (data/marks.py); with --ask depth the question is the simplest depth question
instead ("How far is point A from the camera?" -> "3 m.", whole metres); --mix-spatial N adds the
10-turn spatial conversations of N scenes of the bootstrap's own seed, with their images, as the
bootstrap's instruct mix has them (so a taught LLM keeps their language). Held out: the share of
answers naming the right thing (the right whole metres) and the loss with the right image and
with another one (equal: the LLM answers without looking), and
the share of the answer's gradient norm^2 (w.r.t. the projected image tokens) on the token of
P, against the uniform share 1/N.

--frozen-projector (boost stage) keeps the projector fixed, so every change is the encoder's; --bootstrap
may name a folder whose encoder/ is one the pipeline exported (a fresh LLM over a trained encoder).

`point-probe`: a ridge probe of the depth of each of learn's points from the encoder's one token at
the point, on the image with the point's mark and without it, beside a patch-position-only probe.

`locality`: the same gradient share for the first pixel-level turn of real boost conversations
(the depth at one point) through a given VLM, the loss on the whole answer or (--digits) on its
digit tokens only; beside it that loss, and the same loss with another scene's image in place of
the right one (equal: the answer does not depend on the image, so the boost has nothing to learn
from it).

Each run adds an entry to results/point_reference.json (command, machine, date) and rewrites
results/point_reference.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatialboost.config import TrainConfig, load_config
from spatialboost.data.marks import Mark, draw_marks
from spatialboost.evaluate.closed_form import fit_ridge, one_hot
from spatialboost.models.encoders import Dinov2Encoder
from spatialboost.models.export import CONFIG_FILE, load_encoder
from spatialboost.models.tokenizer import load_tokenizer
from spatialboost.runtime import torch_threads
from spatialboost.train.bootstrap import generate_answers, new_vlm, spatial_text_samples
from spatialboost.train.bootstrap_data import referring_points
from spatialboost.train.data import ConversationDataset, SFTCollator, load_conversations
from spatialboost.train.loop import train
from spatialboost.train.spatial_text import spatial_conversations
from spatialboost.train.stage import load_initial_model
from spatialboost.world.dataset import render_image

RESULTS = Path(__file__).resolve().parent / "results"


def gradient_share(vlm: Any, batch: Any, point: tuple[int, int], size: tuple[int, int]) -> tuple[float, float]:
    """(share of the loss gradient's norm^2 over the projected image tokens that falls on the token of point,
    the loss itself)."""
    features: dict[str, torch.Tensor] = {}
    original = vlm.image_features

    def keep(pixels: torch.Tensor) -> torch.Tensor:
        out = original(pixels)
        out.retain_grad()
        features["out"] = out
        return out

    vlm.image_features = keep
    try:
        vlm.zero_grad()
        loss = vlm(**batch).loss
        loss.backward()
    finally:
        vlm.image_features = original
    energy = (features["out"].grad[0] ** 2).sum(-1)  # (N,)
    side = int(round(energy.numel() ** 0.5))
    energy = energy.reshape(side, side)
    share = energy[token_cell(point, size, side)] / energy.sum()
    return float(share), float(loss)


def token_cell(point: tuple[int, int], size: tuple[int, int], side: int) -> tuple[int, int]:
    """(row, column) of the token of a side x side grid that pixel point (x, y) of an image of
    size (height, width) falls in."""
    (x, y), (height, width) = point, size
    return min(side - 1, y * side // height), min(side - 1, x * side // width)


def other_image_loss(vlm: Any, batch: dict[str, Any], other: dict[str, Any]) -> float:
    """The loss of `batch` (its question and answer) with `other`'s image in place of its own: equal
    to the right image's loss when the answer does not depend on the image."""
    with torch.no_grad():
        return float(vlm(**{**batch, "pixel_values": other["pixel_values"]}).loss)


def collated(data: ConversationDataset, pad_token_id: int) -> Callable[[int], dict[str, Any]]:
    """i -> the one-item batch of data[i] (CPU), collated once however often it is asked for."""
    collate = SFTCollator(pad_token_id)
    return functools.cache(lambda i: collate([data[i]]).inputs(torch.device("cpu")))


def scene_points(cfg: Any, split_seed: int, n: int, per_image: int) -> Iterator[tuple[str, Any, tuple[int, int, str]]]:
    """(ref, rendering, (x, y, what is there)) for up to per_image referring points of each of n scenes
    rendered in memory with their own seed (split_seed 1: learn's training scenes, 2: its held-out ones)."""
    rng = np.random.default_rng(split_seed)
    world = cfg.world.model_copy(update={"seed": cfg.world.seed + 1000 + split_seed})
    for i in range(n):
        rendering, annotation = render_image(world, "bootstrap", i, f"r{split_seed}-{i}")
        points = referring_points(rendering.instances, rendering.depth, annotation, rng, per_image, 30)
        for j, point in enumerate(points):
            yield f"r{split_seed}-{i}-{j}", rendering, point


def learn(args: argparse.Namespace) -> dict[str, Any]:
    mix = [f"bootstrap.spatial_text_scenes={args.mix_spatial}",  # the bootstrap's own conversations, points as --refs
           f"synthesize.point_refs={'marks' if args.refs == 'marks' else 'coordinates'}"] if args.mix_spatial else []  # fmt: skip
    cfg = load_config(args.params, [f"bootstrap.llm.num_layers={args.layers}", f"bootstrap.llm.hidden_size={args.hidden}",
                                    f"bootstrap.llm.intermediate_size={3 * args.hidden}", *mix])  # fmt: skip
    if args.init:  # continue from a trained VLM (its LLM and projector) instead of a fresh LLM
        vlm, tokenizer = load_initial_model(args.init)
        encoder = vlm.encoder
    else:
        folder = Path(args.bootstrap) / "encoder"  # a Hugging Face folder, or an encoder exported by the pipeline
        encoder = load_encoder(folder) if (folder / CONFIG_FILE).is_file() else Dinov2Encoder.from_pretrained(folder)
        tokenizer = load_tokenizer(Path(args.bootstrap) / "tokenizer")
        vlm = None
    encoder.requires_grad_(False)
    width, height = cfg.world.width, cfg.world.height

    def name(x: int, y: int) -> str:
        if args.refs == "marks":
            return "point A"
        if args.refs == "pixel":
            return f"the point ({x}, {y})"
        return f"the point ({(x + 0.5) / width:.2f}, {(y + 0.5) / height:.2f})"

    def make(split_seed: int, n: int, per_image: int) -> tuple[dict, list, list]:
        images, records, items = {}, [], []
        for ref, rendering, (x, y, what) in scene_points(cfg, split_seed, n, per_image):
            marks = [Mark("A", x, y)] if args.refs == "marks" else []
            images[ref] = draw_marks(rendering.rgb, marks)
            if args.ask == "depth":  # the simplest depth question: whole metres, one turn
                if rendering.depth[y, x] <= 0:  # sky
                    continue
                what = f"{round(float(rendering.depth[y, x]))} m"
                question, answer = f"How far is {name(x, y)} from the camera?", f"{what}."
            else:
                question, answer = f"What is at {name(x, y)}?", f"{name(x, y)[:1].upper()}{name(x, y)[1:]} is on {what}."
            records.append({"id": ref, "image": ref, "conversations": [
                {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]})  # fmt: skip
            items.append((ref, question, answer, what, (x, y)))
        return images, records, items

    start = time.perf_counter()
    train_images, records, _ = make(1, args.images, 4)
    if args.mix_spatial:  # the bootstrap's own spatial conversations with their images, as its instruct mix
        spatial = spatial_conversations(cfg, spatial_text_samples(cfg))
        records += [record for _, record, _ in spatial]
        train_images |= {record["image"]: rgb for _, record, rgb in spatial}
    test_images, test_records, items = make(2, 64, 3)
    vlm = vlm or new_vlm(cfg, encoder, tokenizer)
    loop = TrainConfig(stage=args.stage, seed=args.seed, epochs=1, max_steps=args.steps, lr=1e-3, global_batch_size=32,
                       micro_batch_size=32, warmup_ratio=0.03, checkpoint_every=0,
                       group_by_length=bool(args.mix_spatial),  # as the bootstrap batches its mixed lengths
                       train_projector=not args.frozen_projector)  # fmt: skip
    data = ConversationDataset(records, tokenizer, encoder.preprocess, max_length=768 if args.mix_spatial else 512,
                               image_loader=train_images.__getitem__, cache_images=True)  # fmt: skip
    result = train(vlm, data, loop, Path(args.out) / "run", tracker=None, progress=False, name="point_reference")
    vlm.eval()
    vlm.save(Path(args.out) / "vlm")  # for `locality` on boost conversations
    tokenizer.save_pretrained(Path(args.out) / "vlm" / "language_model")
    answers = generate_answers(vlm, tokenizer, [(test_images[ref], q) for ref, q, *_ in items], 24)
    right = (lambda a, what: a == what) if args.ask == "depth" else (lambda a, what: a.endswith(what))  # "13 m" is not "3 m"
    named = [right(a.strip().rstrip("."), what) for a, (_, _, _, what, _) in zip(answers, items, strict=True)]
    test = ConversationDataset(test_records, tokenizer, encoder.preprocess, max_length=512,
                               image_loader=test_images.__getitem__)  # fmt: skip
    batch_of = collated(test, tokenizer.pad_token_id)
    shares, mismatched = [], []
    for i in range(min(60, len(items))):
        shares.append(gradient_share(vlm, batch_of(i), items[i][4], (height, width)))
        mismatched.append(other_image_loss(vlm, batch_of(i), batch_of((i + 1) % len(items))))
    if args.ask == "depth":  # the error of every answer that starts with a number of metres
        numbers = [re.match(r"\s*(\d+)", a) for a in answers]
        abs_err = [abs(int(m.group(1)) - int(what.split()[0])) for m, (*_, what, _) in zip(numbers, items, strict=True) if m]
    n_tokens = vlm.encoder(torch.zeros(1, 3, *encoder.preprocess.size)).patch_tokens.shape[1]
    return {"refs": args.refs, "llm": f"from {args.init}" if args.init else f"fresh, {args.layers} layers x {args.hidden}",
            "stage": args.stage, **({"train_projector": not args.frozen_projector} if args.stage == "boost" else {}),
            "seed": args.seed, "steps": result.steps, "mix_spatial": args.mix_spatial,
            "ask": args.ask, "final_loss": round(result.final_loss, 4), "named_right": float(np.mean(named)),
            **({"abs_err_m": float(np.mean(abs_err)) if abs_err else None} if args.ask == "depth" else {}),
            "test_loss": float(np.mean([loss for _, loss in shares])), "loss_other_image": float(np.mean(mismatched)),
            "grad_share_at_point": float(np.mean([s for s, _ in shares])), "uniform_share": 1 / n_tokens, "n_items": len(items),
            "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip


def locality(args: argparse.Namespace) -> dict[str, Any]:
    vlm, tokenizer = load_initial_model(args.vlm)
    vlm.eval()
    firsts = []
    for record in load_conversations(args.data):
        if not record["id"].startswith(args.split) or len(firsts) >= args.n:
            continue
        question = record["conversations"][0]["value"]
        if "depth" not in question.lower():
            continue
        if record.get("marks"):
            label = re.search(r"point ([A-H])\b", question)
            if label is None:
                continue
            mark = next(m for m in record["marks"] if m["label"] == label.group(1))
            point = (mark["x"], mark["y"])
        else:
            found = re.search(r"\((\d+), (\d+)\)", question)
            if found is None:
                continue
            point = (int(found.group(1)), int(found.group(2)))
        firsts.append(({**record, "conversations": record["conversations"][:2]}, point))
    cfg = load_config(args.params)
    data = ConversationDataset([r for r, _ in firsts], tokenizer, vlm.encoder.preprocess, image_root=args.image_root,
                               max_length=768)  # fmt: skip
    batch_of = collated(data, tokenizer.pad_token_id)
    shares, mismatched = [], []
    for i, (_, point) in enumerate(firsts):
        batch = dict(batch_of(i))
        if args.digits:  # only the answer's digit tokens: the depth value itself
            labels = batch["labels"]
            keep = torch.tensor([[t >= 0 and tokenizer.convert_ids_to_tokens(int(t)).strip().isdigit() for t in row]
                                 for row in labels])  # fmt: skip
            batch["labels"] = torch.where(keep, labels, torch.full_like(labels, -100))
        shares.append(gradient_share(vlm, batch, point, (cfg.world.height, cfg.world.width)))
        mismatched.append(other_image_loss(vlm, batch, batch_of((i + 1) % len(firsts))))  # another scene's image
    n_tokens = vlm.encoder(torch.zeros(1, 3, *vlm.encoder.preprocess.size)).patch_tokens.shape[1]
    return {"vlm": args.vlm, "data": args.data, "loss_on": "digits" if args.digits else "answer",
            "grad_share_at_point": float(np.mean([s for s, _ in shares])), "uniform_share": 1 / n_tokens,
            "loss": float(np.mean([loss for _, loss in shares])), "loss_other_image": float(np.mean(mismatched)),
            "split": args.split, "n_items": len(shares)}  # fmt: skip


def point_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Does an encoder's token at a point carry that point's depth, on images with the point's drawn
    mark (what the boost saw) and on the same images without it (what the dense probes see)?"""
    cfg = load_config(args.params)
    vlm, _ = load_initial_model(args.vlm)
    encoder = vlm.encoder.eval()
    with torch.no_grad():
        side = int(round(encoder(torch.zeros(1, 3, *encoder.preprocess.size)).patch_tokens.shape[1] ** 0.5))

    def features(split_seed: int, n: int, per_image: int) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {"marked": [], "unmarked": [], "position": [], "depth": []}
        scenes = itertools.groupby(scene_points(cfg, split_seed, n, per_image), key=lambda p: p[0].rsplit("-", 1)[0])
        for _, scene in scenes:  # one forward pass per scene: each point's marked image, then the unmarked one
            points = [(rendering, (x, y)) for _, rendering, (x, y, _what) in scene if rendering.depth[y, x] > 0]  # no sky
            if not points:
                continue
            rgb = points[0][0].rgb
            with torch.no_grad():
                images = [draw_marks(rgb, [Mark("A", x, y)]) for _, (x, y) in points] + [rgb]
                tokens = encoder(encoder.preprocess(np.stack(images))).patch_tokens
            for k, (rendering, point) in enumerate(points):
                row, col = token_cell(point, rgb.shape[:2], side)
                rows["marked"].append(tokens[k, row * side + col].numpy())
                rows["unmarked"].append(tokens[-1, row * side + col].numpy())
                rows["position"].append(one_hot(np.array([row * side + col]), side * side)[0])
                rows["depth"].append(float(rendering.depth[point[1], point[0]]))
        return {k: np.asarray(v) for k, v in rows.items()}

    fit, held_out = features(1, args.images, 4), features(2, 64, 3)  # learn's training and held-out scenes
    cut = int(0.8 * len(fit["depth"]))  # the penalty is chosen on the last fifth of the training points

    def rmse(kind: str) -> float:
        def score(pred: np.ndarray) -> float:
            return -float(np.sqrt(np.mean((pred[:, 0] - fit["depth"][cut:]) ** 2)))

        head = fit_ridge(fit[kind][:cut], fit["depth"][:cut], None, fit[kind][cut:], score)
        return float(np.sqrt(np.mean((head.predict(held_out[kind])[:, 0] - held_out["depth"]) ** 2)))

    return {"vlm": args.vlm, "n_fit": len(fit["depth"]), "n_test": len(held_out["depth"]), "tokens": side * side,
            "rmse_marked": rmse("marked"), "rmse_unmarked": rmse("unmarked"), "rmse_position_only": rmse("position")}


def write_markdown(entries: dict[str, Any]) -> None:
    lines = ["# Does the answer's gradient reach the token the question is about?", "",
             "`python benchmarks/point_reference.py` (module docstring). Gradient share: the share of the answer",
             "loss's gradient norm² (w.r.t. the projected image tokens) on the token of the asked point; uniform = 1/N.",
             ""]  # fmt: skip
    for label, entry in entries.items():
        result = entry["result"]
        lines += [f"## {label}", "", f"{entry['date']}, {entry['machine']}. `{entry['command']}`", ""]
        if entry.get("note"):
            lines += [entry["note"], ""]
        lines += ["| " + " | ".join(result) + " |", "|" + "---|" * len(result),
                  "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in result.values()) + " |", ""]  # fmt: skip
    (RESULTS / "point_reference.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--label", required=True)
    parser.add_argument("--note", default="")
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("learn")
    a.add_argument("--refs", choices=("pixel", "norm", "marks"), required=True)
    a.add_argument("--layers", type=int, default=2)
    a.add_argument("--hidden", type=int, default=128)
    a.add_argument("--steps", type=int, default=300)
    a.add_argument("--stage", choices=("instruct", "boost"), default="instruct",
                   help="instruct: LLM + projector learn (encoder frozen); boost: the method on these questions "
                   "(dual-channel attention + projector, LLM frozen); probe the result with boost_controls.py")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--ask", choices=("what", "depth"), default="what",
                   help="what is at the point (its object), or its depth in whole metres")
    a.add_argument("--images", type=int, default=1024)
    a.add_argument("--mix-spatial", type=int, default=0, metavar="N",
                   help="also train on the 10-turn spatial conversations (with their images) of N scenes of the "
                   "bootstrap's own seed, as its instruct mix does (bootstrap.spatial_images): the LLM keeps their language")
    a.add_argument("--frozen-projector", action="store_true",
                   help="boost stage: only the encoder's dual-channel parameters train (train.train_projector=false)")
    a.add_argument("--bootstrap", default="models/bootstrap",
                   help="its encoder/ (a Hugging Face or an exported encoder folder) and tokenizer/ are used")
    a.add_argument("--init", default=None, help="start from this VLM folder (its LLM and projector) instead of a fresh LLM")
    a.add_argument("--out", default="models/exp/point_reference")
    b = sub.add_parser("locality")
    b.add_argument("--vlm", required=True)
    b.add_argument("--data", default="data/qa")
    b.add_argument("--image-root", default="data/world")
    b.add_argument("--n", type=int, default=64)
    b.add_argument("--digits", action="store_true")
    b.add_argument("--split", default="train", help="the conversations whose id starts with this (train, test)")
    c = sub.add_parser("point-probe", help="ridge probe of a point's depth from the encoder's token there, "
                       "with and without the point's drawn mark, beside a patch-position-only probe")
    c.add_argument("--vlm", required=True)
    c.add_argument("--images", type=int, default=512, help="training scenes (learn's, 4 points each)")
    args = parser.parse_args()
    with torch_threads(1):
        result = {"learn": learn, "locality": locality, "point-probe": point_probe}[args.what](args)
    path = RESULTS / "point_reference.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entries[args.label] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "machine": f"{platform.platform()}, torch {torch.__version__}, 1 thread",
                           "command": shlex.join(["python", "benchmarks/point_reference.py", *sys.argv[1:]]),
                           "note": args.note, "result": result}  # fmt: skip
    path.write_text(json.dumps(entries, indent=1) + "\n")
    write_markdown(entries)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
