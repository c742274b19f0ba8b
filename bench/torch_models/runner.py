"""Builds a torch comparator exactly as `cargo xtask train` resolves it (same configuration layers, same
training view of the data) and times its epochs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common import (
    BM3_DEFAULTS,
    DATA_DEFAULTS,
    GRCN_DEFAULTS,
    OPTIM_DEFAULTS,
    PROJECTION_DEFAULTS,
    SGFD_DEFAULTS,
    load_sgfd,
    resolve_config,
    section,
    training_view,
)

from .bm3 import Bm3
from .extractors import build_extractor
from .grcn import Grcn
from .nn import EpochStats, NegativeSampler

# compare.py's model name → (backbone, extractor).
MODELS = {
    "bm3": ("bm3", "vanilla"),
    "grcn": ("grcn", "vanilla"),
    "sgfd-bm3": ("bm3", "sgfd"),
    "sgfd-grcn": ("grcn", "sgfd"),
}


@dataclass
class Built:
    """A model ready to train, with what one epoch needs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    backbone: str
    n_users: int
    n_items: int
    n_train: int
    applied: list[Path]
    epoch_input: object

    def fit_epoch(self) -> EpochStats:
        return self.model.fit_epoch(self.epoch_input, self.optimizer)


def optimizer_for(params, optim_cfg: dict) -> torch.optim.Optimizer:
    """`optim::build`: torch.optim.Adam (L2 weight decay in the gradient) or AdamW, single-tensor path."""
    kind = optim_cfg["kind"]
    lr, wd = float(optim_cfg["lr"]), float(optim_cfg["weight_decay"])
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, foreach=False)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, foreach=False)
    raise ValueError(f"unknown optimiser `{kind}`")


def build(name: str, data_dir: Path, configs_dir: Path, seed: int) -> Built:
    """The comparator `name` (a key of MODELS) on the SGFD-layout folder `data_dir`."""
    if name not in MODELS:
        raise ValueError(f"unknown torch model `{name}`: expected one of {', '.join(MODELS)}")
    backbone, extractor_kind = MODELS[name]
    table, applied = resolve_config(configs_dir, data_dir, backbone)
    torch.manual_seed(seed)
    normalization = section(table, "data", DATA_DEFAULTS)["normalization"]
    data = training_view(load_sgfd(data_dir, normalization), table, seed)
    if not data.features:
        raise ValueError(f"{data_dir}: {backbone} needs the item feature files")
    features = [(m, torch.from_numpy(x)) for m, x in data.features]
    labels = torch.from_numpy(data.labels) if data.labels is not None else None
    projection_cfg = section(table, "projection", PROJECTION_DEFAULTS)
    sgfd_cfg = section(table, "sgfd", SGFD_DEFAULTS)
    extractor = build_extractor(extractor_kind, features, labels, data.n_labels, projection_cfg, sgfd_cfg)
    if backbone == "bm3":
        model = Bm3(section(table, "bm3", BM3_DEFAULTS), data.n_users, data.n_items, data.train, extractor)
        epoch_input = torch.from_numpy(data.train)
    else:
        model = Grcn(section(table, "grcn", GRCN_DEFAULTS), data.n_users, data.n_items, data.train, extractor)
        epoch_input = NegativeSampler(data.n_items, data.train, seed)
    optimizer = optimizer_for(model.parameters(), section(table, "optim", OPTIM_DEFAULTS))
    return Built(model, optimizer, backbone, data.n_users, data.n_items, len(data.train), applied, epoch_input)


def time_epochs(built: Built, epochs: int) -> tuple[list[float], EpochStats]:
    """Seconds of each of `epochs` training epochs, and the last epoch's statistics."""
    secs, stats = [], EpochStats()
    built.model.train()
    for _ in range(epochs):
        t = time.perf_counter()
        stats = built.fit_epoch()
        secs.append(time.perf_counter() - t)
    return secs, stats
