"""Small building blocks shared by the comparators: activations, linear layers with the two initialisations
of crates/features/src/nn.rs, row-wise L2 normalisation, and graphs built from train pairs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def activation(spec: dict):
    """The activation of a config value `{ kind = "identity" | "relu" | "tanh" | "leaky_relu", slope }`."""
    kind = spec.get("kind", "identity")
    if kind == "identity":
        return lambda x: x
    if kind == "relu":
        return F.relu
    if kind == "tanh":
        return torch.tanh
    if kind == "leaky_relu":
        slope = float(spec.get("slope", 0.01))
        return lambda x: F.leaky_relu(x, slope)
    raise ValueError(f"unknown activation `{kind}`")


def linear(in_dim: int, out_dim: int, init: str = "torch") -> nn.Linear:
    """`Linear(in_dim → out_dim)`: PyTorch's default init (U(±1/√fan_in) for W and b) or Keras' Glorot-uniform
    W with b = 0 (`LinearInit`)."""
    layer = nn.Linear(in_dim, out_dim)
    if init == "glorot":
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    elif init != "torch":
        raise ValueError(f"unknown init `{init}`: expected torch or glorot")
    return layer


def l2n(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise `x / max(‖x‖, eps)` (`F.normalize`)."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def sym_normalized_adjacency(n_users: int, n_items: int, pairs: np.ndarray) -> torch.Tensor:
    """`D^{-1/2} A D^{-1/2}` of the bipartite graph over `n_users + n_items` nodes, users first, with MMRec's
    `1e-7` added to every degree (`graph::sym_normalized`), as a coalesced sparse COO tensor (MMRec's
    `torch.sparse.FloatTensor`)."""
    users, items = pairs[:, 0], pairs[:, 1] + n_users
    rows = np.concatenate([users, items])
    cols = np.concatenate([items, users])
    n = n_users + n_items
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = (deg + 1e-7) ** -0.5
    values = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    index = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(index, torch.from_numpy(values), (n, n)).coalesce()


class NegativeSampler:
    """Uniform negatives: an item the user has no train pair with (`mmkd_data::NegativeSampler`), drawn for a
    whole batch at once and redrawn where they hit a positive."""

    def __init__(self, n_items: int, train: np.ndarray, seed: int):
        self.n_items = n_items
        self.keys = np.sort(train[:, 0] * n_items + train[:, 1])
        self.rng = np.random.default_rng(seed)

    def _positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        at = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return self.keys[at] == keys

    def sample(self, users: np.ndarray) -> np.ndarray:
        """One negative item per entry of `users`."""
        items = self.rng.integers(0, self.n_items, size=len(users))
        bad = self._positive(users, items)
        while bad.any():
            items[bad] = self.rng.integers(0, self.n_items, size=int(bad.sum()))
            bad[bad] = self._positive(users[bad], items[bad])
        return items


class EpochStats:
    """Means over an epoch's batches of each named loss term (`EpochStats` of the Rust trainer)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.n_batches = 0
        self.first: dict[str, float] | None = None

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        values = torch.stack([t.detach().reshape(()) for t in losses.values()]).tolist()
        row = dict(zip(losses, values))
        if self.first is None:
            self.first = row
        for name, value in row.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.n_batches += 1

    def means(self) -> dict[str, float]:
        return {name: total / max(self.n_batches, 1) for name, total in self.sums.items()}
