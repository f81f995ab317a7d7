"""Test-set evaluation of a trained run: relational accuracy on the test pairs, classification
accuracy on the test images (where the model classifies), the calibration of the predicted
outcome probabilities on the test pairs (ECE and a reliability diagram), the ranking metrics of
an ordering model (Spearman, Kendall, NDCG of its item scores against the labels), and the
confusion matrix.

Where the test split comes from is the data source's business (MNIST: the 20k test pairs and the
10k test images; your own data: the held-out comparisons and the labelled items).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import pair_loss
from .data.splits import to_tensor
from .errors import ConfigError
from .metrics import (
    calibration,
    cluster_accuracy,
    item_outputs,
    item_scores,
    outcome_probabilities,
    pair_outputs,
    ranking_metrics,
    score_outputs,
)
from .plots import plot_confusion, plot_reliability
from .run import load_config, load_run_model, read_annotators, run_files, run_title
from .utils import resolve_device, resolve_precision, write_json_atomic


def evaluate_run(run_dir: str | os.PathLike, device: str = "auto", labels: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate the best checkpoint of a run on its source's test split and return the numbers;
    it writes nothing (:func:`write_evaluation` does). ``labels``: for a run on your own data, an
    (item, label) file to score classification and ranking against instead of the run's ``--labels``.

    Raises:
        ConfigError, CheckpointError: not a usable run folder, or ``labels`` for an MNIST run.
        DataError: the run's data (or the labels file) can no longer be read.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    if labels is not None:
        if cfg.data.source != "user":
            raise ConfigError("--labels applies to runs trained on your own data; an MNIST run is scored on MNIST's labels")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labels=str(Path(labels).resolve())))
    test = cfg.data.test_split(cfg.relation)
    _, out = item_outputs(model, to_tensor(test.images, dev), resolve_precision(cfg.precision, dev))
    labels = test.labels
    loss = pair_loss(cfg)
    m = score_outputs(model, loss, out, torch.from_numpy(labels).to(dev), test.pairs)
    labelled = labels >= 0
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "model": cfg.model, "loss": cfg.loss,
        "pairs": cfg.data.pairs if model.relational and cfg.data.source == "mnist" else None,
        "split": test.name, "relation": cfg.relation,
        "relational_accuracy": m["rel_acc"], "classification_accuracy": m.get("cls_acc"),
        "confusion_matrix": None, "n_test_pairs": len(test.pairs), "n_test_images": int(labelled.sum()),
    }
    if model.relational and len(test.pairs):
        result["calibration"] = calibration(outcome_probabilities(pair_outputs(model, loss, out, test.pairs)).cpu(),
                                            test.pairs.z)
    if model.relational and cfg.relation != "same" and len(np.unique(labels[labelled])) > 1:
        score = item_scores(model, loss, out[torch.from_numpy(labelled).to(out.device)])
        result.update(ranking_metrics(score, labels[labelled]))
    if model.classifies:
        result["classes_used"], result["num_classes"] = m["classes_used"], cfg.num_classes  # 1: they collapsed
    if model.classifies and labelled.any():
        from sklearn.metrics import confusion_matrix  # imported when needed: sklearn is slow to import

        cm = confusion_matrix(labels[labelled], m["pred"][labelled], labels=list(range(cfg.num_classes)))
        result["confusion_matrix"] = cm.tolist()
        result["cluster_accuracy"] = cluster_accuracy(m["pred"][labelled], labels[labelled], cfg.num_classes)
    annotators = read_annotators(run_dir)  # --annotator-model flip: the learned rates
    if annotators is not None:
        result["annotators"] = annotators
    return result


def write_evaluation(run_dir: str | os.PathLike, result: dict[str, Any]) -> None:
    """``eval.json`` and its plots (``confusion.png``, ``reliability.png``) in the run folder."""
    files, title = run_files(run_dir), run_title(load_config(run_dir))
    if result.get("calibration"):
        plot_reliability(result["calibration"], files.reliability, title=title)
    if result.get("confusion_matrix") is not None:
        plot_confusion(np.array(result["confusion_matrix"]), files.confusion, title=title)
    write_json_atomic(files.eval, result)


def test_embeddings(run_dir: str | os.PathLike, device: str = "auto") -> dict[str, np.ndarray]:
    """128-d embeddings of a run's test images (by its best model) and their labels."""
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    test = cfg.data.test_split(cfg.relation)
    emb, _ = item_outputs(model, to_tensor(test.images, dev), resolve_precision(cfg.precision, dev))
    return {"embeddings": emb.cpu().numpy(), "labels": test.labels}
