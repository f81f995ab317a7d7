"""Test-set evaluation of a trained run: relational accuracy on the test pairs, classification
accuracy on the test images (where the model classifies), the calibration of the predicted
outcome probabilities on the test pairs (ECE and a reliability diagram), the ranking metrics of
an ordering model (Spearman, Kendall, NDCG of its item scores against the labels), and the
confusion matrix.

Where the test split comes from is the data source's business (MNIST: the 20k test pairs and the
10k test images; your own data: the held-out comparisons and the labelled items).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from .data.sources import to_tensor
from .metrics import (
    calibration,
    item_outputs,
    item_scores,
    outcome_probabilities,
    pair_outputs,
    ranking_metrics,
    score_outputs,
)
from .plots import plot_confusion, plot_reliability
from .run import load_run_model, run_title
from .utils import resolve_device, resolve_precision, write_json_atomic


def evaluate_run(run_dir: str | os.PathLike, device: str = "auto", write: bool = True) -> dict[str, Any]:
    """Evaluate the best checkpoint of a run on its source's test split; write ``eval.json`` and
    ``confusion.png`` into the run folder when ``write``.

    Raises:
        ConfigError, CheckpointError: not a usable run folder.
        DataError: the run's data can no longer be read.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    test = cfg.data.test_split(cfg.relation)
    _, out = item_outputs(model, to_tensor(test.images, dev), resolve_precision(cfg.precision, dev))
    labels = test.labels
    m = score_outputs(model, out, torch.from_numpy(labels).to(dev), test.pairs)
    labelled = labels >= 0
    result: dict[str, Any] = {
        "run_dir": str(run_dir), "model": cfg.model, "loss": cfg.loss,
        "pairs": cfg.data.pairs if cfg.relational and cfg.data.kind == "mnist" else None,
        "split": test.name, "relation": cfg.relation,
        "relational_accuracy": m["rel_acc"], "classification_accuracy": m.get("cls_acc"),
        "confusion_matrix": None, "n_test_pairs": len(test.pairs), "n_test_images": int(labelled.sum()),
    }
    if model.relational and len(test.pairs):
        result["calibration"] = cal = calibration(outcome_probabilities(pair_outputs(model, out, test.pairs)).cpu(),
                                                  test.pairs.z)
        if write:
            plot_reliability(cal, run_dir / "reliability.png", title=run_title(cfg))
    if model.relational and cfg.relation != "same" and len(np.unique(labels[labelled])) > 1:
        score = item_scores(model, out[torch.from_numpy(labelled).to(out.device)])
        result.update(ranking_metrics(score, labels[labelled]))
    if model.classifies and labelled.any():
        cm = confusion_matrix(labels[labelled], m["pred"][labelled], labels=list(range(cfg.num_classes)))
        result["confusion_matrix"] = cm.tolist()
        if write:
            plot_confusion(cm, run_dir / "confusion.png", title=run_title(cfg))
    if (run_dir / "annotators.json").exists():  # --annotator-model flip: the learned rates
        result["annotators"] = json.loads((run_dir / "annotators.json").read_text())["annotators"]
    if write:
        write_json_atomic(run_dir / "eval.json", result)
    return result


def test_embeddings(run_dir: str | os.PathLike, device: str = "auto") -> dict[str, np.ndarray]:
    """128-d embeddings of a run's test images (by its best model) and their labels."""
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    test = cfg.data.test_split(cfg.relation)
    emb, _ = item_outputs(model, to_tensor(test.images, dev), resolve_precision(cfg.precision, dev))
    return {"embeddings": emb.cpu().numpy(), "labels": test.labels}
