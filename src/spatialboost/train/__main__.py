"""`python -m spatialboost.train --params configs/paper.yaml [-S train.adapter=lora ...]`: the
training stage (`--stage boost`, the default) or LLaVA-1.5's align / instruct for a new encoder
(`--stage align`), also under `torchrun --standalone --nproc_per_node N -m spatialboost.train`
(what those stages launch themselves when orchestration.train_nproc_per_node > 1)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from spatialboost.config import load_config
from spatialboost.io import write_json_atomic
from spatialboost.train.stage import run_train_stage, train_metrics


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m spatialboost.train", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["boost", "align", "instruct"], default="boost", help="which training stage")
    parser.add_argument("--params", default="params.yaml", help="params file (demo: params.yaml)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--result", type=Path, help="rank 0 writes the run's metrics (JSON) here")
    args = parser.parse_args()
    cfg = load_config(args.params, args.set)
    if args.stage != "boost":
        from spatialboost.train.lvlm_stage import run_lvlm_stage

        metrics = run_lvlm_stage(cfg, args.stage, progress=not args.no_progress)
        if args.result is not None and int(os.environ.get("RANK", "0")) == 0:
            write_json_atomic(args.result, metrics)
        print(f"{args.stage}: {metrics.get('steps', 0)} steps, final loss {metrics.get('final_loss')}")
        return
    result = run_train_stage(cfg, progress=not args.no_progress)
    if args.result is not None and int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(args.result, train_metrics(cfg, result))
    print(f"{result.steps}/{result.total_steps} steps, final loss {result.final_loss:.4f}, {result.tokens_per_s:.0f} tokens/s")


if __name__ == "__main__":
    main()
