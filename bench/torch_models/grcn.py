"""GRCN as crates/backbones/src/grcn.rs computes one training step (spec grcn.md), graph-wide every step.

- per modality m: `H = l2n(lrelu(S_m(F_m)))`, `p = l2n(P_m)` (the reference's routing loop, which only
  re-normalises p), then one parameter-free GAT-like convolution over the bidirectional edge list Bd whose
  per-target softmax α_m is the modality's edge weight; `rep_m = [p; H] + GAT([p; H])`;
- `w_e = max_m α_m[e]·Γ[source of e, m]` (confid);
- id graph: `x0 = l2n(X)`, `x1 = A(w)·x0`, `x2 = A(w)·x1`, `id_rep = x0 + x1 + x2`;
- `R = [id_rep, rep_1, …, rep_M]`, BPR on (pos, neg) + reg_weight·L2 of the batch rows + Σ aux.

Aggregations are gathers (`x[sources]`) and `index_add_` scatters over the 2E edges, i.e. the message
passing of PyG's `SAGEConv`/`GATConv` with `aggr = add` without torch_scatter; the segment softmax is PyG's
`utils.softmax` (detached per-target maximum via `scatter_reduce(amax)`, +1e-16 in the denominator).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nn import EpochStats, NegativeSampler, l2n

SOFTMAX_EPS = 1e-16


def segment_softmax(scores: torch.Tensor, segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of `scores` `(nnz,)` within each segment (PyG `softmax`)."""
    with torch.no_grad():
        shift = torch.full((n_segments,), float("-inf")).scatter_reduce(
            0, segment, scores.detach(), "amax", include_self=True
        )
    exp = (scores - shift[segment]).exp()
    sums = torch.zeros(n_segments).index_add(0, segment, exp)
    return exp / (sums[segment] + SOFTMAX_EPS)


def spmm_weighted(targets: torch.Tensor, sources: torch.Tensor, w: torch.Tensor, x: torch.Tensor, n_rows: int):
    """`out_t = Σ_{e = (s → t)} w_e · x_s`: `(n_rows, d)`."""
    return torch.zeros(n_rows, x.shape[1]).index_add(0, targets, w.unsqueeze(1) * x[sources])


def gat_conv(targets: torch.Tensor, sources: torch.Tensor, x: torch.Tensor):
    """GRCN's GATConv on a square node graph: α = per-target softmax of ⟨x_t, x_s⟩, `out_t = Σ α_e x_s`."""
    scores = (x[targets] * x[sources]).sum(dim=1)  # (nnz,)
    alpha = segment_softmax(scores, targets, x.shape[0])
    return spmm_weighted(targets, sources, alpha, x, x.shape[0]), alpha


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """`mean softplus(−(pos − neg))`."""
    return F.softplus(neg - pos).mean()


class Grcn(nn.Module):
    def __init__(self, cfg: dict, n_users: int, n_items: int, train_pairs: np.ndarray, extractor):
        super().__init__()
        unsupported = {
            "weight_mode": "confid",
            "fusion_mode": "concat",
            "has_act": False,
            "is_pruning": False,
            "routing_to_users": False,
            "has_norm": True,
            "dropout": 0.0,
        }
        for key, want in unsupported.items():
            if cfg.get(key, want) != want:
                raise ValueError(f"grcn.{key} = {cfg[key]}: the comparator implements only {want!r}")
        if extractor.out_dim != cfg["dim_c"]:
            raise ValueError(f"grcn: the extractor outputs {extractor.out_dim} features, dim_c is {cfg['dim_c']}")
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        n_nodes, m = n_users + n_items, len(extractor.names)
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, cfg["dim_e"])))
        self.preference = nn.ParameterList(
            nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, cfg["dim_c"]))) for _ in range(m)
        )
        self.model_specific_conf = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_nodes, m)))
        self.extractor = extractor
        # Bd: edge e < E is user → item node, E + e the reverse; targets are the rows of the aggregation.
        users = torch.from_numpy(train_pairs[:, 0])
        item_nodes = torch.from_numpy(train_pairs[:, 1] + n_users)
        self.register_buffer("targets", torch.cat([item_nodes, users]))
        self.register_buffer("sources", torch.cat([users, item_nodes]))
        self.train_pairs = train_pairs

    def content_graph(self, preference: torch.Tensor, features: torch.Tensor):
        h = l2n(F.leaky_relu(features, 0.01))  # (I, dim_c)
        p = l2n(preference)  # (U, dim_c)
        for _ in range(self.cfg["num_routing"]):
            p = l2n(p)
        x = torch.cat([p, h], dim=0)  # (N, dim_c)
        out, alpha = gat_conv(self.targets, self.sources, x)
        return x + out, alpha

    def forward(self):
        """R `(N, dim_e + M·dim_c)` and the extractor's features of every item."""
        feats, _ = self.extractor.extract(None, train=True)
        reps, alphas = [], []
        for f, pref in zip(feats, self.preference):
            rep, alpha = self.content_graph(pref, f)
            reps.append(rep)
            alphas.append(alpha)
        conf = self.model_specific_conf[self.sources]  # (2E, M)
        w = (torch.stack(alphas, dim=1) * conf).max(dim=1).values  # (2E,)
        n = self.n_users + self.n_items
        x0 = l2n(self.id_embedding)
        x1 = spmm_weighted(self.targets, self.sources, w, x0, n)
        x2 = spmm_weighted(self.targets, self.sources, w, x1, n)
        return torch.cat([x0 + x1 + x2, *reps], dim=1), feats

    def batch_losses(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """`users` = u1, u1, u2, u2, …; `items` = pos1, neg1, pos2, neg2, … (the reference's loader order)."""
        r, feats = self.forward()
        item_nodes = items + self.n_users
        scores = (r[users] * r[item_nodes]).sum(dim=1).reshape(-1, 2)  # (b, 2)
        x = self.id_embedding
        reg = (x[users] ** 2 + x[item_nodes] ** 2).mean()
        for p in self.preference:
            reg = reg + (p[users] ** 2).mean()
        losses = {"bpr": bpr_loss(scores[:, 0], scores[:, 1]), "reg": reg * float(self.cfg["reg_weight"])}
        losses.update(self.extractor.aux_losses_given(items, feats))
        losses["total"] = sum(losses.values())
        return losses

    def fit_epoch(self, sampler: NegativeSampler, optimizer) -> EpochStats:
        """One shuffled pass over the train pairs in batches of `batch_size` edges, one uniform negative each."""
        stats = EpochStats()
        pairs = self.train_pairs
        order = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()))).permutation(len(pairs))
        for start in range(0, len(order), self.cfg["batch_size"]):
            batch = pairs[order[start : start + self.cfg["batch_size"]]]
            neg = sampler.sample(batch[:, 0])
            users = torch.from_numpy(np.repeat(batch[:, 0], 2))
            items = torch.from_numpy(np.stack([batch[:, 1], neg], axis=1).reshape(-1))
            losses = self.batch_losses(users, items)
            stats.add(losses)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
        return stats
