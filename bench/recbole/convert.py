"""Our data layouts as RecBole atomic files.

- SGFD layout (train.csv/test.csv): the pairs our trainer fits on (the holdout view of `train::training_view`,
  numpy's draw) become RecBole benchmark files `<name>.train.inter`, `<name>.valid.inter`, `<name>.test.inter`
  (`benchmark_filename = ["train", "valid", "test"]`), so RecBole trains on the same number of pairs.
- Sequential layout (interactions.csv userID,itemID,timestamp): one `<name>.inter`; RecBole orders it by
  time, filters it and cuts it per user itself (see run.py).

Run alone: `python bench/recbole/convert.py --data DIR --out DIR [--seq]`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import SEQ_INTERACTIONS, load_sgfd, training_view  # noqa: E402

NAME = "bench"
GENERAL_PARTS = ("train", "valid", "test")


def write_pairs(path: Path, pairs: np.ndarray) -> None:
    with path.open("w") as f:
        f.write("user_id:token\titem_id:token\n")
        for u, i in pairs:
            f.write(f"{u}\t{i}\n")


def convert_sgfd(data_dir: Path, out_dir: Path, table: dict, seed: int) -> dict[str, int]:
    """Writes the three benchmark files of `data_dir` under `out_dir/NAME/`; returns their pair counts."""
    data = training_view(load_sgfd(data_dir, with_features=False), table, seed)
    folder = out_dir / NAME
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for part, pairs in zip(GENERAL_PARTS, (data.train, data.valid, data.test)):
        write_pairs(folder / f"{NAME}.{part}.inter", pairs)
        counts[part] = len(pairs)
    return counts


def convert_seq(data_dir: Path, out_dir: Path) -> int:
    """Writes `out_dir/NAME/NAME.inter` from `interactions.csv`; returns the number of interactions."""
    src = data_dir / SEQ_INTERACTIONS
    if not src.is_file():
        raise FileNotFoundError(f"{data_dir}: no {SEQ_INTERACTIONS} (the sequential layout)")
    folder = out_dir / NAME
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with src.open(newline="") as f, (folder / f"{NAME}.inter").open("w") as out:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"userID", "itemID", "timestamp"} <= set(reader.fieldnames):
            raise ValueError(f"{src}: expected columns userID, itemID, timestamp, got {reader.fieldnames}")
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for row in reader:
            out.write(f"{int(row['userID'])}\t{int(row['itemID'])}\t{float(row['timestamp'])}\n")
            n += 1
    return n


def main() -> int:
    from common import REPO_ROOT, resolve_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seq", action="store_true", help="the sequential layout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", type=Path, default=REPO_ROOT / "configs")
    args = p.parse_args()
    if args.seq:
        print(convert_seq(args.data, args.out))
    else:
        table, _ = resolve_config(args.configs, args.data, "mf")
        print(convert_sgfd(args.data, args.out, table, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
