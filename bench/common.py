"""What every comparator shares: the data layouts of the Rust toolkit, its layered configuration, the
holdout split, and the epoch timing and JSON line that `compare.py` prints.

Nothing here imports torch, so `compare.py` can set the thread environment before torch is loaded.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The SGFD layout's files, modalities in the Rust loader's order (crates/data/src/loader.rs SGFD_FEATURES).
SGFD_FEATURES = (("visual", "FeatureImage_normal.npy"), ("text", "FeatureText_normal.npy"))
SGFD_LABELS = "MetaData_normal.npy"
SEQ_INTERACTIONS = "interactions.csv"
MANIFEST = "manifest.json"

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------
# Configuration: the layers of xtask/src/config.rs, read from the same TOML files.


def merge(base: dict, overlay: dict) -> None:
    """Deep merge of `overlay` into `base`, as `config::merge`: a table merges key by key unless its `kind`
    changes, in which case (as for any other value) the one above replaces the one below."""
    for key, value in overlay.items():
        below = base.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            k_below, k_above = below.get("kind"), value.get("kind")
            if k_below is None or k_above is None or k_below == k_above:
                merge(below, value)
                continue
        base[key] = value


def is_generated(data_dir: Path) -> bool:
    """Whether `data_dir` was written by `xtask gen-data` (its manifest says mmkd-synth)."""
    try:
        manifest = json.loads((data_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == "mmkd-synth"


def resolve_config(configs_dir: Path, data_dir: Path, model: str) -> tuple[dict, list[Path]]:
    """The merged configuration table of `model` on `data_dir` (layers 2-6 of xtask/src/config.rs: base,
    dataset/<folder name>, model/<model>, dataset/<folder name>/<model>, generated/<model>), and the files
    applied, in order. The reference protocol's layer and `--set` are not supported: the comparators time
    the default holdout runs."""
    name = data_dir.resolve().name
    candidates = [
        configs_dir / "base.toml",
        configs_dir / "dataset" / f"{name}.toml",
        configs_dir / "model" / f"{model}.toml",
        configs_dir / "dataset" / name / f"{model}.toml",
    ]
    if is_generated(data_dir):
        candidates.append(configs_dir / "generated" / f"{model}.toml")
    table: dict = {}
    applied = []
    for path in candidates:
        if path.is_file():
            with path.open("rb") as f:
                merge(table, tomllib.load(f))
            applied.append(path)
    return table, applied


def section(table: dict, name: str, defaults: dict) -> dict:
    """`defaults` (the Rust struct's `Default`) overridden by the table's `[name]` section."""
    out = dict(defaults)
    out.update(table.get(name, {}))
    return out


# The Rust defaults of the sections the comparators read (their `impl Default`), so that a section absent
# from every layer resolves as it does in Rust.
OPTIM_DEFAULTS = {"kind": "adam", "lr": 1e-3, "weight_decay": 0.0}
TRAIN_DEFAULTS = {"protocol": "holdout", "valid_frac": 0.1}
DATA_DEFAULTS = {"normalization": "none"}
PROJECTION_DEFAULTS = {"out_dim": 128, "activation": {"kind": "identity"}, "l2_normalize": False, "init": "torch"}
BM3_DEFAULTS = {"embed_dim": 128, "n_layers": 1, "dropout": 0.5, "reg_weight": 0.1, "cl_weight": 2.0, "batch_size": 2048}
GRCN_DEFAULTS = {
    "dim_e": 128,
    "dim_c": 128,
    "num_routing": 3,
    "has_norm": True,
    "has_act": False,
    "is_pruning": False,
    "weight_mode": "confid",
    "fusion_mode": "concat",
    "dropout": 0.0,
    "batch_size": 1024,
    "reg_weight": 1e-5,
    "routing_to_users": False,
}
SGFD_DEFAULTS = {
    "kd_weight": 1.0,
    "ce_weight": 1.0,
    "t_decay": 100.0,
    "out_dim": 128,
    "teacher_depth": {"rule": "deep", "ratio": 4},
    "extractor_act": {"kind": "identity"},
    "extractor_l2norm": True,
    "init": "torch",
    "use_ld": True,
    "use_fd": True,
    "ld_form": "l1_mean",
    "fd_form": "mse_mean",
    "use_fusion": True,
    "fusion_act": {"kind": "leaky_relu", "slope": 0.01},
    "fusion_order": [],
    "tce_on_probs": True,
    "use_labels": True,
    "backbone_source": "student",
    "teacher_mode": "joint",
}
MF_DEFAULTS = {"embed_dim": 64, "reg_weight": 1e-4, "batch_size": 1024}
NGCF_DEFAULTS = {
    "embed_dim": 128,
    "hidden_sizes": [128, 128, 128],
    "message_dropout": 0.1,
    "node_dropout": 0.0,
    "reg_weight": 1e-5,
    "batch_size": 1024,
}
DGCF_DEFAULTS = {
    "embed_dim": 128,
    "n_factors": 4,
    "n_iterations": 2,
    "n_layers": 1,
    "reg_weight": 1e-3,
    "cor_weight": 0.01,
    "batch_size": 1024,
}
NEUMF_DEFAULTS = {
    "mf_embed_dim": 128,
    "mlp_embed_dim": 128,
    "mlp_hidden": [256, 128],
    "dropout": 0.1,
    "n_neg": 1,
    "batch_size": 1024,
}
SEQ_DEFAULTS = {"embed_dim": 128, "batch_size": 256}
SEQ_DATA_DEFAULTS = {"min_count": 5, "max_len": 50, "test_frac": 0.2}
SASREC_DEFAULTS = {
    "n_layers": 2,
    "n_heads": 2,
    "inner_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "layer_norm_eps": 1e-12,
    "max_len": 50,
}
GRU4REC_DEFAULTS = {"hidden_size": 128, "num_layers": 1, "dropout_prob": 0.3}


# ---------------------------------------------------------------------------------------------------------
# Data: the SGFD layout, as crates/data/src/loader.rs reads it.


@dataclass
class SgfdData:
    """Interactions as plain arrays. Pairs are `(user, item)` int64 rows, deduplicated and sorted user-major
    (the order of `Csr::pairs`)."""

    n_users: int
    n_items: int
    train: np.ndarray
    test: np.ndarray
    valid: np.ndarray
    features: list[tuple[str, np.ndarray]] = field(default_factory=list)
    labels: np.ndarray | None = None
    n_labels: int = 0


def read_pairs(path: Path) -> np.ndarray:
    """`userID`, `itemID` columns (by name) of a CSV file as an `(n, 2)` int64 array."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"userID", "itemID"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns userID and itemID, got {reader.fieldnames}")
        rows = [(int(r["userID"]), int(r["itemID"])) for r in reader]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def dedup_sorted(pairs: np.ndarray, n_items: int) -> np.ndarray:
    """Distinct pairs in user-major order (`Csr::from_pairs`)."""
    keys = np.unique(pairs[:, 0] * n_items + pairs[:, 1])
    return np.stack([keys // n_items, keys % n_items], axis=1)


def normalize(x: np.ndarray, how: str) -> np.ndarray:
    """Row-wise preprocessing of generic features (`FeatureStore::normalize`): none, l2 or standard (per
    column z-score; constant columns become 0)."""
    if how == "none":
        return x
    if how == "l2":
        norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)
    if how == "standard":
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=0)
        std = np.sqrt(np.maximum((x64**2).mean(axis=0) - mean**2, 0.0))
        out = np.where(std > 1e-12, (x64 - mean) / np.where(std > 1e-12, std, 1.0), 0.0)
        return out.astype(np.float32)
    raise ValueError(f"unknown normalization `{how}`: expected none, l2 or standard")


def load_sgfd(data_dir: Path, normalization: str = "none", with_features: bool = True) -> SgfdData:
    """train.csv, test.csv (and valid.csv if present), the two feature files and the labels."""
    if not (data_dir / "train.csv").is_file():
        raise FileNotFoundError(f"{data_dir}: no train.csv (the SGFD layout)")
    train = read_pairs(data_dir / "train.csv")
    test = read_pairs(data_dir / "test.csv")
    valid = read_pairs(data_dir / "valid.csv") if (data_dir / "valid.csv").is_file() else np.zeros((0, 2), np.int64)
    features = []
    for name, file in SGFD_FEATURES:
        path = data_dir / file
        if with_features and path.is_file():
            features.append((name, normalize(np.load(path).astype(np.float32, copy=False), normalization)))
    labels, n_labels = None, 0
    if (data_dir / SGFD_LABELS).is_file():
        raw = np.load(data_dir / SGFD_LABELS).reshape(-1)
        values, labels = np.unique(raw, return_inverse=True)
        labels, n_labels = labels.astype(np.int64), len(values)
    all_pairs = np.concatenate([train, test, valid])
    if features:
        n_items = features[0][1].shape[0]
    elif (data_dir / SGFD_FEATURES[0][1]).is_file():
        n_items = int(np.load(data_dir / SGFD_FEATURES[0][1], mmap_mode="r").shape[0])
    else:
        n_items = max(len(labels) if labels is not None else 0, int(all_pairs[:, 1].max()) + 1)
    n_users = int(all_pairs[:, 0].max()) + 1
    return SgfdData(
        n_users=n_users,
        n_items=n_items,
        train=dedup_sorted(train, n_items),
        test=dedup_sorted(test, n_items),
        valid=dedup_sorted(valid, n_items),
        features=features,
        labels=labels,
        n_labels=n_labels,
    )


def with_holdout(data: SgfdData, frac: float, seed: int) -> SgfdData:
    """`Dataset::with_holdout`: `min(round(frac·n), n − 1)` of each user's n train items move to the validation
    split (a uniform subset; numpy's generator, so not the Rust draw, but the same counts)."""
    rng = np.random.default_rng(seed)
    frac = min(max(frac, 0.0), 1.0)
    users = data.train[:, 0]
    starts = np.searchsorted(users, np.arange(data.n_users + 1))
    keep = np.ones(len(data.train), dtype=bool)
    for u in range(data.n_users):
        lo, hi = starts[u], starts[u + 1]
        n = hi - lo
        n_move = min(int(np.floor(frac * n + 0.5)), max(n - 1, 0))
        if n_move:
            keep[lo + rng.choice(n, size=n_move, replace=False)] = False
    moved = data.train[~keep]
    valid = dedup_sorted(np.concatenate([data.valid, moved]), data.n_items)
    return SgfdData(**{**data.__dict__, "train": data.train[keep], "valid": valid})


def training_view(data: SgfdData, table: dict, seed: int) -> SgfdData:
    """The pairs our trainer fits on (`train::training_view`): the holdout split unless the protocol is
    `reference`."""
    train_cfg = section(table, "train", TRAIN_DEFAULTS)
    if train_cfg["protocol"] == "reference":
        return data
    return with_holdout(data, float(train_cfg["valid_frac"]), seed)


# ---------------------------------------------------------------------------------------------------------
# Figures.


def epoch_figures(epoch_secs: list[float]) -> tuple[float, float]:
    """The first epoch's seconds and the median of the others (of the first when only one was timed), as
    `bench_train::epoch_figures` (upper median for an even count)."""
    rest = sorted(epoch_secs[1:] if len(epoch_secs) > 1 else epoch_secs)
    return epoch_secs[0], rest[len(rest) // 2]


def result_line(impl: str, model: str, data: Path, threads: int, epoch_secs: list[float], batches: int,
                torch_version: str, **extra) -> dict:
    """The JSON object `compare.py` prints for one model."""
    first, median = epoch_figures(epoch_secs)
    out = {
        "impl": impl,
        "model": model,
        "data": str(data),
        "threads": threads,
        "epochs": len(epoch_secs),
        "first_epoch_secs": first,
        "epoch_secs": median,
        "batches_per_epoch": batches,
        "torch_version": torch_version,
        # OpenMP's spin-waiting decides multi-thread timings on a loaded machine (see README).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    out.update(extra)
    return out


def mean(values: list[float]) -> float | None:
    """Mean of `values`, or None when empty."""
    return statistics.fmean(values) if values else None
