"""`python -m spatialboost.train --params configs/paper.yaml [-S train.adapter=lora ...]`: the
training stage, also under `torchrun --standalone --nproc_per_node N -m spatialboost.train`."""

from __future__ import annotations

import argparse

from spatialboost.config import load_config
from spatialboost.train.stage import run_train_stage


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m spatialboost.train", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (demo: params.yaml)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.lr=1e-4")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    result = run_train_stage(load_config(args.params, args.set), progress=not args.no_progress)
    print(f"{result.steps}/{result.total_steps} steps, final loss {result.final_loss:.4f}, {result.tokens_per_s:.0f} tokens/s")


if __name__ == "__main__":
    main()
