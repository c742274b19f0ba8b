#!/usr/bin/env python3
"""Checks that the torch comparators compute the losses our Rust models compute.

1. At a fixed initialisation, the first batch's loss terms must lie in the ranges the math predicts (random
   embeddings: cosines near 0, BPR near ln 2; SGFD's double-softmax L_TCE within its closed-form bounds).
2. With `--rust-json FILE` (lines written by `cargo xtask bench train --json FILE` on the same data), the mean
   total loss of the last of `--epochs` epochs must agree with the Rust cell's `last_loss` within `--rel-tol`:
   the RNGs differ, so this is a check of magnitude, not of digits.

    bench/.venv/bin/python bench/check_losses.py --data /tmp/bench-tiny [--rust-json /tmp/rust.json]

Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from torch_models.runner import MODELS, build, time_epochs  # noqa: E402


def first_batch_terms(built) -> dict[str, float]:
    """The loss terms of one first batch at the initial parameters (no optimiser step)."""
    model = built.model
    with torch.no_grad():
        if built.backbone == "bm3":
            pairs = built.epoch_input[torch.randperm(len(built.epoch_input))][: model.cfg["batch_size"]]
            losses = model.batch_losses(pairs[:, 0], pairs[:, 1])
        else:
            pairs = model.train_pairs[: model.cfg["batch_size"]]
            neg = built.epoch_input.sample(pairs[:, 0])
            users = torch.from_numpy(np.repeat(pairs[:, 0], 2))
            items = torch.from_numpy(np.stack([pairs[:, 1], neg], axis=1).reshape(-1))
            losses = model.batch_losses(users, items)
    return {k: float(v) for k, v in losses.items()}


def expected_ranges(name: str, built) -> dict[str, tuple[float, float]]:
    """Closed-form or near-closed-form ranges of each term at initialisation."""
    model = built.model
    ranges: dict[str, tuple[float, float]] = {}
    extractor = model.extractor
    n_mod = len(extractor.names)
    if built.backbone == "bm3":
        cl = float(model.cfg["cl_weight"])
        # Random predictor and embeddings: every cosine is near 0, so every 1 − cos term is near 1.
        ranges.update({"ui": (0.8, 1.2), "iu": (0.8, 1.2), "align": (cl * 2 * n_mod * 0.8, cl * 2 * n_mod * 1.2)})
        ranges["reg"] = (0.0, float(model.cfg["reg_weight"]) * 10.0)
    else:
        ranges.update({"bpr": (math.log(2) - 0.35, math.log(2) + 0.35), "reg": (0.0, float(model.cfg["reg_weight"]))})
    if name.startswith("sgfd-"):
        cfg = extractor.cfg
        c = extractor.classifiers[0].out_features
        # L_TCE of one row (CE on probabilities) lies in [log(e + C − 1) − 1, log(e + C − 1)]; L_FCE at a
        # random init is near log C; L_LD ≤ 2/C (L1 of two distributions, averaged over C); L_FD of unit rows ≤ 4/d.
        hi = math.log(math.e + c - 1)
        ce_lo = (hi - 1.0) + 0.5 * math.log(c)
        ce_hi = hi + 1.5 * math.log(c)
        ranges["ce"] = (float(cfg["ce_weight"]) * ce_lo, float(cfg["ce_weight"]) * ce_hi)
        ranges["kd"] = (0.0, float(cfg["kd_weight"]) * (2.0 / c + 4.0 / extractor.out_dim))
    return ranges


def check_first_batch(name: str, data: Path, configs: Path, seed: int) -> list[str]:
    built = build(name, data, configs, seed)
    terms = first_batch_terms(built)
    failures = []
    for term, (lo, hi) in expected_ranges(name, built).items():
        value = terms.get(term)
        ok = value is not None and lo <= value <= hi
        print(f"  {name:<10} {term:<6} {value if value is not None else float('nan'):>10.4f}  in [{lo:.4f}, {hi:.4f}]"
              f"  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{name}: first-batch {term} = {value} outside [{lo}, {hi}]")
    return failures


def rust_losses(path: Path) -> dict[str, float]:
    """`last_loss` of each Rust cell, keyed as compare.py names the models."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        cell = json.loads(line)
        key = cell["model"] if cell["extractor"] == "vanilla" else f"sgfd-{cell['model']}"
        if cell["extractor"] in ("vanilla", "sgfd") and cell.get("last_loss") is not None:
            out[key] = cell["last_loss"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated torch models")
    p.add_argument("--configs", type=Path, default=HERE.parent / "configs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rust-json", type=Path)
    p.add_argument("--epochs", type=int, default=2, help="epochs before comparing with the Rust last_loss")
    p.add_argument("--rel-tol", type=float, default=0.1)
    args = p.parse_args()
    torch.set_num_threads(1)
    names = [m for m in args.models.split(",") if m]
    failures = []
    print("first batch at initialisation:")
    for name in names:
        failures += check_first_batch(name, args.data, args.configs, args.seed)
    if args.rust_json:
        rust = rust_losses(args.rust_json)
        print(f"mean total loss of epoch {args.epochs}, torch vs Rust:")
        for name in names:
            if name not in rust:
                print(f"  {name:<10} no Rust cell in {args.rust_json}")
                continue
            secs, stats = time_epochs(build(name, args.data, args.configs, args.seed), args.epochs)
            ours, theirs = stats.means()["total"], rust[name]
            rel = abs(ours - theirs) / max(abs(theirs), 1e-12)
            ok = rel <= args.rel_tol
            print(f"  {name:<10} torch {ours:.4f}  rust {theirs:.4f}  rel {rel:.3f}  {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(f"{name}: epoch-{args.epochs} loss {ours} vs Rust {theirs} (rel {rel:.3f})")
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    n_checks = len(names) * (2 if args.rust_json else 1)
    print(f"model checks: {n_checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
