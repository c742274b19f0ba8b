#!/usr/bin/env python3
"""Times a comparator's training epochs and prints one JSON line, to set beside `cargo xtask bench train`.

    bench/.venv/bin/python bench/compare.py --model bm3 --data /tmp/bench-tiny --threads 1 --epochs 2

Models: bm3, grcn, sgfd-bm3, sgfd-grcn (our own PyTorch code, bench/torch_models/) and ngcf, dgcf, neumf, mf,
lightgcn, sasrec, gru4rec (RecBole 1.2.1, bench/recbole/). Only training epochs are timed: data loading,
model construction and evaluation are not. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_MODELS = ("bm3", "grcn", "sgfd-bm3", "sgfd-grcn")
RECBOLE_MODELS = ("ngcf", "dgcf", "neumf", "mf", "lightgcn", "sasrec", "gru4rec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=TORCH_MODELS + RECBOLE_MODELS)
    p.add_argument("--data", required=True, type=Path, help="data folder (SGFD layout, or sequential for sasrec/gru4rec)")
    p.add_argument("--threads", required=True, type=int, help="intra-op threads (torch, OpenMP, MKL)")
    p.add_argument("--epochs", required=True, type=int, help="timed epochs; the first is reported apart")
    p.add_argument("--json", type=Path, help="append the JSON line to this file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", type=Path, default=HERE.parent / "configs", help="folder of base.toml, dataset/, model/")
    p.add_argument("--work", type=Path, help="RecBole: folder for the converted atomic files (default: a temporary one)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.epochs < 1:
        p.error("--threads and --epochs must be at least 1")
    return args


def set_threads(n: int) -> None:
    """The thread environment of every backend torch may use; must run before torch is imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


def load_recbole_runner():
    """bench/recbole/run.py, loaded by path: the folder has no __init__.py, so it never shadows the real
    `recbole` package."""
    spec = importlib.util.spec_from_file_location("bench_recbole_run", HERE / "recbole" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import torch

    torch.set_num_threads(args.threads)
    from common import result_line

    if args.model in TORCH_MODELS:
        from torch_models.runner import build, time_epochs

        built = build(args.model, args.data, args.configs, args.seed)
        secs, stats = time_epochs(built, args.epochs)
        line = result_line(
            "torch",
            args.model,
            args.data,
            args.threads,
            secs,
            stats.n_batches,
            torch.__version__,
            n_users=built.n_users,
            n_items=built.n_items,
            n_train=built.n_train,
            last_loss=stats.means().get("total"),
            configs=[str(p) for p in built.applied],
        )
    else:
        runner = load_recbole_runner()
        secs, batches, info = runner.run(args.model, args.data, args.configs, args.epochs, args.seed, args.work)
        line = result_line("recbole", args.model, args.data, args.threads, secs, batches, torch.__version__, **info)
    text = json.dumps(line)
    print(text, flush=True)
    if args.json:
        with args.json.open("a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
