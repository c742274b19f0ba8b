"""BM3 as crates/backbones/src/bm3.rs computes one training step (see its module doc for the reference).

Per batch of B (user, positive item) pairs, no negatives:
    u, i   = LightGCN mean over layers 0..L of [E_u; E_i] with Â (sparse COO), i += E_i
    f_m    = extractor features of the batch's items (and the SGFD losses on them)
    targets: detached, inverted dropout p, one mask row per distinct id
    loss   = L_ui + L_iu + reg_weight·(‖u‖_F + ‖i‖_F)/I + cl_weight·Σ_m (L_m + L_mm) + Σ aux
with L_xy = 1 − mean cos(g(x), target_y) and g the predictor, applied to the B gathered rows only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nn import EpochStats, sym_normalized_adjacency


def cosine_alignment_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`1 − mean_k cos(a_k, b_k)` with PyTorch's eps = 1e-8."""
    return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8).mean()


def emb_loss(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """MMRec's `EmbLoss()(u, i)`: `(‖u‖_F + ‖i‖_F) / rows(i)`."""
    return (torch.linalg.norm(u) + torch.linalg.norm(i)) / i.shape[0]


def dropout_rows(x: torch.Tensor, ids: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout of the rows `x` `(b, d)` with one mask row per distinct id, shared by its rows
    (`bm3::dropout_rows`)."""
    if p == 0.0:
        return x
    unique, inverse = torch.unique(ids, return_inverse=True)
    mask = (torch.rand(len(unique), x.shape[1]) >= p).to(x.dtype) / (1.0 - p)  # (u, d)
    return x * mask[inverse]


class Bm3(nn.Module):
    def __init__(self, cfg: dict, n_users: int, n_items: int, train_pairs, extractor):
        super().__init__()
        d = cfg["embed_dim"]
        if extractor.out_dim != d:
            raise ValueError(f"bm3: the extractor's out_dim ({extractor.out_dim}) must equal embed_dim ({d})")
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, d)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, d)))
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.extractor = extractor
        self.register_buffer("adj", sym_normalized_adjacency(n_users, n_items, train_pairs))

    def propagate(self):
        """Users `(U, d)` and items `(I, d)`: the layer mean, items plus their ID embedding once more."""
        layer = torch.cat([self.user_emb, self.item_emb], dim=0)  # (U + I, d)
        total = layer
        for _ in range(self.cfg["n_layers"]):
            layer = torch.sparse.mm(self.adj, layer)
            total = total + layer
        mean = total / (self.cfg["n_layers"] + 1)
        return mean[: self.n_users], mean[self.n_users :] + self.item_emb

    def batch_losses(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        p = float(self.cfg["dropout"])
        u, i = self.propagate()
        u_b, i_b = u[users], i[items]  # (b, d)
        u_target = dropout_rows(u_b.detach(), users, p)
        i_target = dropout_rows(i_b.detach(), items, p)
        feats, aux = self.extractor.extract(items, train=True)
        align = torch.zeros(())
        for f in feats:
            f_target = dropout_rows(f.detach(), items, p)
            f_online = self.predictor(f)
            align = align + cosine_alignment_loss(f_online, i_target) + cosine_alignment_loss(f_online, f_target)
        losses = {
            "ui": cosine_alignment_loss(self.predictor(u_b), i_target),
            "iu": cosine_alignment_loss(self.predictor(i_b), u_target),
            "align": align * float(self.cfg["cl_weight"]),
            "reg": emb_loss(u, i) * float(self.cfg["reg_weight"]),
        }
        losses.update(aux)
        losses["total"] = sum(losses.values())
        return losses

    def fit_epoch(self, train_pairs: torch.Tensor, optimizer) -> EpochStats:
        """One shuffled pass over the train pairs (user-major `(E, 2)` int64) in batches of `batch_size`, the
        last one partial; every term is read back to the host each batch, as the Rust `fit_epoch` does."""
        stats = EpochStats()
        order = torch.randperm(len(train_pairs))
        for batch in torch.split(train_pairs[order], self.cfg["batch_size"]):
            losses = self.batch_losses(batch[:, 0], batch[:, 1])
            stats.add(losses)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
        return stats
