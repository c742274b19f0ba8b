"""Feature extractors, as the Rust `FeatureExtractor` implementations compute them.

- `Projection` = crates/features/src/extractor.rs `Projection`: `act(W_m F_m + b_m)`, optionally
  L2-normalised, one linear layer per modality over the frozen generic features.
- `Sgfd` = crates/student-kd/src/sgfd.rs `Sgfd` in `joint` mode: student S_m (crates/student-kd/src/student.rs),
  teacher T_m + classifier C_m + fusion (crates/teacher/src/{extractor,classifier,fusion,model}.rs) and the
  losses of crates/teacher/src/losses.rs and crates/student-kd/src/losses.rs, in their reference forms
  (`ld_form = l1_mean`, `fd_form = mse_mean`, `tce_on_probs`, row mean, modalities averaged).

`extract(items)` returns `(features, aux)`: one `(b, d)` tensor per modality (every item when `items` is
None) and, for `items` given in training, the weighted auxiliary losses `[("kd", λ1·L_KD), ("ce", λ2·L_CE)]`.
`aux_losses_given(items, all_features)` gathers the student rows from features already computed for every
item (GRCN's path, `FeatureExtractor::aux_losses_given`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .nn import activation, l2n, linear


class Projection(nn.Module):
    """The vanilla extractor (`[projection]`)."""

    def __init__(self, features: list[tuple[str, torch.Tensor]], cfg: dict):
        super().__init__()
        self.names = [name for name, _ in features]
        for i, (_, x) in enumerate(features):
            self.register_buffer(f"input_{i}", x)
        self.layers = nn.ModuleList(linear(x.shape[1], cfg["out_dim"], cfg["init"]) for _, x in features)
        self.act = activation(cfg["activation"])
        self.l2 = bool(cfg["l2_normalize"])
        self.out_dim = cfg["out_dim"]

    def inputs(self) -> list[torch.Tensor]:
        return [getattr(self, f"input_{i}") for i in range(len(self.names))]

    def extract(self, items: torch.Tensor | None, train: bool = True):
        out = []
        for x, layer in zip(self.inputs(), self.layers):
            h = self.act(layer(x if items is None else x[items]))  # (b, d)
            out.append(l2n(h) if self.l2 else h)
        return out, []

    def aux_losses_given(self, items: torch.Tensor, all_features: list[torch.Tensor]):
        return []


def reference_widths(in_dim: int, out_dim: int, ratio: int) -> list[int]:
    """The teacher's widths under `{ rule = "deep", ratio }` (`widths::reference_widths`)."""
    widths, h = [in_dim], in_dim
    while True:
        c = h // ratio
        if c < out_dim:
            widths.append(out_dim)
            return widths
        widths.append(c)
        if c == out_dim:
            return widths
        h = c


def teacher_widths(depth: dict, in_dim: int, out_dim: int) -> list[int]:
    """`widths::layer_widths` for the deep and shallow rules (the paper rule is not ported here)."""
    rule = depth.get("rule", "deep")
    if rule == "deep":
        return reference_widths(in_dim, out_dim, int(depth.get("ratio", 4)))
    if rule == "shallow":
        return [in_dim, out_dim]
    raise ValueError(f"teacher_depth rule `{rule}` is not supported by the comparator")


class DeepExtractor(nn.Module):
    """T_m: affine layers with no activation between them, then `act`, then L2 (`DeepExtractor`)."""

    def __init__(self, widths: list[int], init: str, act, l2: bool):
        super().__init__()
        self.layers = nn.ModuleList(linear(a, b, init) for a, b in zip(widths[:-1], widths[1:]))
        self.act, self.l2 = act, l2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        x = self.act(x)
        return l2n(x) if self.l2 else x


class Sgfd(nn.Module):
    """SGFD with a joint teacher (`teacher_mode = "joint"`, `backbone_source = "student"`)."""

    def __init__(self, features: list[tuple[str, torch.Tensor]], labels: torch.Tensor, n_labels: int, cfg: dict):
        super().__init__()
        if cfg.get("teacher_mode", "joint") != "joint" or cfg.get("backbone_source", "student") != "student":
            raise ValueError("the comparator implements SGFD with a joint teacher and the student as source")
        for key in ("shared_classifier", "classifier_width", "ld_last_modality_only", "detach_teacher_in_kd"):
            if cfg.get(key):
                raise ValueError(f"sgfd.{key} is not the PyTorch reference's form: the comparator does not support it")
        for key, want in (("ld_form", "l1_mean"), ("fd_form", "mse_mean"), ("row_reduction", "mean")):
            if cfg.get(key, want) != want:
                raise ValueError(f"sgfd.{key} = {cfg[key]}: the comparator implements only {want}")
        self.cfg = cfg
        self.names = [name for name, _ in features]
        d = cfg["out_dim"]
        self.out_dim = d
        for i, (_, x) in enumerate(features):
            self.register_buffer(f"input_{i}", x)
        self.register_buffer("labels", labels)
        act = activation(cfg["extractor_act"])
        l2 = bool(cfg["extractor_l2norm"])
        init = cfg["init"]
        self.students = nn.ModuleList(linear(x.shape[1], d, init) for _, x in features)
        self.student_act, self.student_l2 = act, l2
        self.teachers = nn.ModuleList(
            DeepExtractor(teacher_widths(cfg["teacher_depth"], x.shape[1], d), init, act, l2) for _, x in features
        )
        self.classifiers = nn.ModuleList(linear(d, n_labels, init) for _ in features)
        self.use_fusion = bool(cfg["use_fusion"]) and bool(cfg["use_labels"]) and len(features) >= 2
        order = cfg["fusion_order"] or self.names
        self.fusion_order = [self.names.index(m) for m in order]
        if self.use_fusion:
            self.transfer = linear(len(features) * d, d, init)
            self.fusion_classifier = linear(d, n_labels, init)
            self.fusion_act = activation(cfg["fusion_act"])

    def inputs(self) -> list[torch.Tensor]:
        return [getattr(self, f"input_{i}") for i in range(len(self.names))]

    def student_features(self, items: torch.Tensor | None) -> list[torch.Tensor]:
        out = []
        for x, layer in zip(self.inputs(), self.students):
            h = self.student_act(layer(x if items is None else x[items]))  # (b, d)
            out.append(l2n(h) if self.student_l2 else h)
        return out

    def teacher_outputs(self, items: torch.Tensor):
        """Teacher features, logits and fusion logits of `items`: one forward over the distinct items, spread
        back to `items`' order (`Sgfd::teacher_outputs`)."""
        unique, inverse = torch.unique(items, return_inverse=True)
        feats = [t(x[unique]) for x, t in zip(self.inputs(), self.teachers)]  # (u, d) each
        logits = [c(f) for f, c in zip(feats, self.classifiers)]  # (u, C) each
        fused = None
        if self.use_fusion:
            cat = torch.cat([feats[m] for m in self.fusion_order], dim=1)  # (u, M·d)
            fused = self.fusion_classifier(self.fusion_act(self.transfer(cat)))[inverse]  # (b, C)
        return [f[inverse] for f in feats], [z[inverse] for z in logits], fused

    def losses_with(self, items: torch.Tensor, student: list[torch.Tensor]):
        """The weighted SGFD losses on the rows `items`, the student's features of those rows given."""
        cfg = self.cfg
        y = self.labels[items]  # (b,)
        f_t, z_t, fused = self.teacher_outputs(items)
        tau = float(cfg["t_decay"])
        lds, fds, tces = [], [], []
        for m, classifier in enumerate(self.classifiers):
            if cfg["use_labels"]:
                z = F.softmax(z_t[m], dim=-1) if cfg["tce_on_probs"] else z_t[m]
                tces.append(F.cross_entropy(z, y))
            if cfg["use_ld"]:
                p_t = F.softmax(z_t[m] / tau, dim=-1)
                p_s = F.softmax(classifier(student[m]) / tau, dim=-1)
                lds.append((p_t - p_s).abs().mean())
            if cfg["use_fd"]:
                fds.append(((student[m] - f_t[m]) ** 2).mean())
        aux = []
        kd = [torch.stack(t).mean() for t in (lds, fds) if t]
        if kd:
            aux.append(("kd", sum(kd) * float(cfg["kd_weight"])))
        ce = [torch.stack(tces).mean()] if tces else []
        if fused is not None:
            ce.append(F.cross_entropy(fused, y))
        if ce:
            aux.append(("ce", sum(ce) * float(cfg["ce_weight"])))
        return aux

    def extract(self, items: torch.Tensor | None, train: bool = True):
        feats = self.student_features(items)
        aux = self.losses_with(items, feats) if (train and items is not None) else []
        return feats, aux

    def aux_losses_given(self, items: torch.Tensor, all_features: list[torch.Tensor]):
        return self.losses_with(items, [f[items] for f in all_features])


def build_extractor(kind: str, features: list[tuple[str, torch.Tensor]], labels: torch.Tensor | None,
                    n_labels: int, projection_cfg: dict, sgfd_cfg: dict):
    """`vanilla` (Projection) or `sgfd` (Sgfd with the model's resolved `[sgfd]`)."""
    if kind == "vanilla":
        return Projection(features, projection_cfg)
    if kind == "sgfd":
        if labels is None:
            raise ValueError("SGFD needs the item labels (MetaData_normal.npy)")
        return Sgfd(features, labels, n_labels, sgfd_cfg)
    raise ValueError(f"unknown extractor `{kind}`")
