"""Test-set evaluation of a trained run: relational accuracy on the 20k test pairs,
classification accuracy on the 10k test images (where the model classifies), confusion matrix.

A run on a user's data has no test split: it is evaluated on its held-out comparisons (the val
split, which picked the best checkpoint, so the figure is slightly optimistic) and, where a labels
file was given, on the labelled items (never seen in training: the models learn from comparisons)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from .checkpoint import load_weights
from .data.mnist import MNIST, load_mnist
from .data.pairs import mnist_pairs
from .errors import CheckpointError
from .models import can_classify
from .train import TrainConfig, build_run_model, item_outputs, load_config, run_title, score_outputs, to_tensor
from .utils import resolve_device, resolve_precision, write_json_atomic

N_TEST_PAIRS = 20_000


def load_run_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                   which: str = "best") -> tuple[torch.nn.Module, TrainConfig]:
    """The model of a run folder with its best (default) or last weights, in eval mode.

    Raises:
        ConfigError: not a run folder.
        CheckpointError: weights missing or unusable.
    """
    from .checkpoint import _read_pointer

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    model = build_run_model(cfg)
    if which == "best":
        path = run_dir / "best.safetensors"
    else:
        pointer = _read_pointer(run_dir)
        if pointer is None:
            raise CheckpointError(f"{run_dir}: no checkpoint")
        path = run_dir / pointer["weights"]
    load_weights(path, model)
    return model.to(device).eval(), cfg


def evaluate_run(run_dir: str | os.PathLike, mnist: MNIST | None = None, device: str = "auto",
                 write: bool = True) -> dict[str, Any]:
    """Evaluate the best checkpoint of a run on the test split (MNIST) or on the held-out
    comparisons and labelled items (user data); write ``eval.json`` and ``confusion.png`` into the
    run folder when ``write``.

    Raises:
        ConfigError, CheckpointError: not a usable run folder.
        DataError: the run's data can no longer be read.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    precision = resolve_precision(cfg.precision, dev)
    if cfg.user_data:
        from .train import load_user_data_for

        ud = load_user_data_for(dataclasses.replace(cfg, progress=False))
        labels = ud.labels if ud.labels is not None else np.full(len(ud.images), -1, np.int64)
        images, pairs, split = ud.images.images, ud.val, "held-out comparisons and labelled items"
    else:
        mnist = mnist or load_mnist(cfg.data_dir)
        images, labels, split = mnist.test.images, mnist.test.labels, "MNIST test"
        pairs = mnist_pairs(mnist, "test", N_TEST_PAIRS, cfg.pair_seed, cfg.relation, data_dir=cfg.data_dir)
    _, out = item_outputs(model, to_tensor(images, dev), precision)
    m = score_outputs(model, cfg.model, out, torch.from_numpy(labels).to(dev), pairs)
    labelled = labels >= 0
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": cfg.model,
        "loss": cfg.loss,
        "pairs": cfg.pairs if cfg.model != "supervised" and not cfg.user_data else None,
        "split": split,
        "relation": cfg.relation,
        "relational_accuracy": m["rel_acc"],
        "classification_accuracy": m.get("cls_acc"),
        "confusion_matrix": None,
        "n_test_pairs": len(pairs),
        "n_test_images": int(labelled.sum()),
    }
    if cfg.model == "ranker" and labelled.any():
        from scipy.stats import spearmanr

        result["spearman_rho"] = float(spearmanr(out[:, 0].cpu().numpy()[labelled], labels[labelled]).statistic)
    if can_classify(cfg.model) and labelled.any():
        cm = confusion_matrix(labels[labelled], m["pred"][labelled], labels=list(range(cfg.num_classes)))
        result["confusion_matrix"] = cm.tolist()
        if write:
            from .plots import plot_confusion

            plot_confusion(cm, run_dir / "confusion.png", title=run_title(cfg))
    if write:
        write_json_atomic(run_dir / "eval.json", result)
    return result


def test_outputs(run_dir: str | os.PathLike, mnist: MNIST | None = None, device: str = "auto") -> dict[str, np.ndarray]:
    """128-d test embeddings (and class predictions where defined) of a run's best model."""
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    mnist = mnist or load_mnist(cfg.data_dir)
    emb, out = item_outputs(model, to_tensor(mnist.test.images, dev), resolve_precision(cfg.precision, dev))
    return {"embeddings": emb.cpu().numpy(), "labels": mnist.test.labels}
