"""RecBole 1.2.1 comparators: NGCF, DGCF, NeuMF, BPR-MF and LightGCN on the SGFD layout, SASRec and GRU4Rec on
the sequential layout, with the widths and batch sizes our configuration resolves to (configs/model/*.toml).

Only `Trainer._train_epoch` is timed (negative sampling in RecBole's data loader included, as our epochs
include theirs); conversion, `create_dataset`, `data_preparation`, model construction and evaluation are not.
Loaded by compare.py by file path; this folder has no `__init__.py`, so it never shadows the `recbole` package.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (  # noqa: E402
    BM3_DEFAULTS,
    DGCF_DEFAULTS,
    GRU4REC_DEFAULTS,
    MF_DEFAULTS,
    NEUMF_DEFAULTS,
    NGCF_DEFAULTS,
    OPTIM_DEFAULTS,
    SASREC_DEFAULTS,
    SEQ_DATA_DEFAULTS,
    SEQ_DEFAULTS,
    resolve_config,
    section,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert import GENERAL_PARTS, NAME, convert_seq, convert_sgfd  # noqa: E402

SEQUENTIAL = ("sasrec", "gru4rec")


def model_settings(model: str, table: dict) -> tuple[str, dict]:
    """RecBole's model class name and its parameters, from our resolved configuration `table`."""
    if model == "ngcf":
        c = section(table, "ngcf", NGCF_DEFAULTS)
        return "NGCF", {
            "embedding_size": c["embed_dim"],
            "hidden_size_list": list(c["hidden_sizes"]),
            "node_dropout": c["node_dropout"],
            "message_dropout": c["message_dropout"],
            "reg_weight": c["reg_weight"],
            "train_batch_size": c["batch_size"],
        }
    if model == "dgcf":
        c = section(table, "dgcf", DGCF_DEFAULTS)
        return "DGCF", {
            "embedding_size": c["embed_dim"],
            "n_factors": c["n_factors"],
            "n_iterations": c["n_iterations"],
            "n_layers": c["n_layers"],
            "reg_weight": c["reg_weight"],
            "cor_weight": c["cor_weight"],
            "train_batch_size": c["batch_size"],
        }
    if model == "neumf":
        c = section(table, "neumf", NEUMF_DEFAULTS)
        n_neg = int(c["n_neg"])
        return "NeuMF", {
            "mf_embedding_size": c["mf_embed_dim"],
            "mlp_embedding_size": c["mlp_embed_dim"],
            "mlp_hidden_size": list(c["mlp_hidden"]),
            "dropout_prob": c["dropout"],
            "mf_train": True,
            "mlp_train": True,
            "use_pretrain": False,
            # RecBole's point-wise loader counts positives and negatives in a batch; ours counts positives.
            "train_batch_size": c["batch_size"] * (1 + n_neg),
            "train_neg_sample_args": {"distribution": "uniform", "sample_num": n_neg, "alpha": 1.0,
                                      "dynamic": False, "candidate_num": 0},
        }
    if model == "mf":
        c = section(table, "mf", MF_DEFAULTS)
        return "BPR", {"embedding_size": c["embed_dim"], "train_batch_size": c["batch_size"]}
    if model == "lightgcn":
        # No Rust LightGCN: BM3's graph part (width, layers, batch) with RecBole's default reg_weight.
        c = section(table, "bm3", BM3_DEFAULTS)
        return "LightGCN", {
            "embedding_size": c["embed_dim"],
            "n_layers": c["n_layers"],
            "reg_weight": 1e-5,
            "train_batch_size": c["batch_size"],
        }
    seq = section(table, "seq", SEQ_DEFAULTS)
    common_seq = {"train_batch_size": seq["batch_size"], "loss_type": "CE", "train_neg_sample_args": None}
    if model == "sasrec":
        c = section(table, "sasrec", SASREC_DEFAULTS)
        return "SASRec", {
            **common_seq,
            "n_layers": c["n_layers"],
            "n_heads": c["n_heads"],
            "hidden_size": seq["embed_dim"],
            "inner_size": c["inner_size"],
            "hidden_dropout_prob": c["hidden_dropout_prob"],
            "attn_dropout_prob": c["attn_dropout_prob"],
            "hidden_act": "gelu",
            "layer_norm_eps": c["layer_norm_eps"],
            "initializer_range": 0.02,
            "MAX_ITEM_LIST_LENGTH": c["max_len"],
        }
    if model == "gru4rec":
        c = section(table, "gru4rec", GRU4REC_DEFAULTS)
        return "GRU4Rec", {
            **common_seq,
            "embedding_size": seq["embed_dim"],
            "hidden_size": c["hidden_size"],
            "num_layers": c["num_layers"],
            "dropout_prob": c["dropout_prob"],
            "MAX_ITEM_LIST_LENGTH": section(table, "seq_data", SEQ_DATA_DEFAULTS)["max_len"],
        }
    raise ValueError(f"unknown RecBole model `{model}`")


def base_settings(model: str, table: dict, work: Path, epochs: int, seed: int) -> dict:
    """Data, device and trainer settings shared by every model."""
    optim = section(table, "optim", OPTIM_DEFAULTS)
    if optim["kind"] != "adam":
        raise ValueError(f"optim.kind = {optim['kind']}: the RecBole comparators use Adam")
    out = {
        "data_path": str(work),
        "dataset": NAME,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "gpu_id": "",
        "use_gpu": False,
        "worker": 0,
        "seed": seed,
        "reproducibility": True,
        "epochs": epochs,
        "learner": "adam",
        "learning_rate": float(optim["lr"]),
        "weight_decay": float(optim["weight_decay"]),
        "checkpoint_dir": str(work / "saved"),
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "Recall@20",
        "eval_batch_size": 4096,
    }
    if model in SEQUENTIAL:
        seq_data = section(table, "seq_data", SEQ_DATA_DEFAULTS)
        k = int(seq_data["min_count"])
        test = float(seq_data["test_frac"])
        out.update({
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "user_inter_num_interval": f"[{k},inf)",
            "item_inter_num_interval": f"[{k},inf)",
            # Our cut: the last ⌊test_frac·ℓ⌋ items of each sequence are test, no validation share.
            "eval_args": {"split": {"RS": [1.0 - test, 0.0, test]}, "order": "TO", "group_by": "user", "mode": "full"},
        })
    else:
        out.update({
            "load_col": {"inter": ["user_id", "item_id"]},
            "benchmark_filename": list(GENERAL_PARTS),
            "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        })
    return out


def run(model: str, data_dir: Path, configs_dir: Path, epochs: int, seed: int, work: Path | None):
    """Trains `model` for `epochs` epochs; returns the seconds of each epoch, the batches of one, and
    extra fields for the JSON line."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    # LightGCN has no Rust model of its own: it reads BM3's layers (see model_settings).
    table, applied = resolve_config(configs_dir, data_dir, "bm3" if model == "lightgcn" else model)
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-recbole-")
        work = Path(tmp.name)
    work = work.resolve()
    if model in SEQUENTIAL:
        counts = {"interactions": convert_seq(data_dir, work)}
    else:
        counts = convert_sgfd(data_dir, work, table, seed)
    name, params = model_settings(model, table)
    settings = {**base_settings(model, table, work, epochs, seed), **params}
    cwd = os.getcwd()
    # RecBole's trainer writes a tensorboard folder into the working directory: keep it in `work`.
    os.chdir(work)
    argv = sys.argv
    # RecBole's Config reads sys.argv as overrides: give it none of compare.py's flags.
    sys.argv = argv[:1]
    try:
        config = Config(model=name, dataset=NAME, config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, _valid, _test = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        secs, loss = [], None
        for epoch in range(epochs):
            t = time.perf_counter()
            loss = trainer._train_epoch(train_data, epoch, show_progress=False)
            secs.append(time.perf_counter() - t)
        batches = len(train_data)
        total = sum(loss) if isinstance(loss, tuple) else loss
        info = {
            "recbole_model": name,
            "n_users": dataset.user_num,
            "n_items": dataset.item_num,
            "n_train": len(train_data.dataset),
            "train_batch_size": config["train_batch_size"],
            "last_loss": None if total is None else float(total) / max(batches, 1),
            "converted": counts,
            "configs": [str(p) for p in applied],
        }
    finally:
        sys.argv = argv
        os.chdir(cwd)
        if tmp is not None:
            tmp.cleanup()
    return secs, batches, info
