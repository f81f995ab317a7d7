"""Few-shot transfer (the paper's "chimera"): freeze a trained backbone, fit a fresh
Linear(128, K) on k labelled training images per class, test on the 10k test images.

With 1 image per class the accuracy swings by several points from one draw to the next, so the
k images are drawn at random by seed many times (default 10) and the mean, standard deviation,
min and max are reported. The backbone is frozen and in eval mode, so the drawn images are
embedded once and the heads of all draws are trained together, batched, on those embeddings.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data.splits import to_tensor
from .errors import ConfigError, DataError
from .metrics import draw_shots, item_outputs
from .ordinal import anchor_predict, cutpoint_predictions
from .plots import plot_confusion
from .run import load_config, load_run_model, run_files, run_title
from .utils import resolve_device, resolve_precision, write_json_atomic

__all__ = ["METHODS", "draw_shots", "fewshot_accuracy", "fewshot_eval", "fit_heads", "naming_accuracy",
           "ordinal_accuracy"]

def fit_heads(x: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int = 300, lr: float = 1e-3,
              weight_decay: float = 1e-4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train D linear heads at once, full batch, with Adam: ``x`` (D, n, E), ``y`` (D, n).
    Returns weights (D, E, K) and biases (D, 1, K)."""
    d, _, e = x.shape
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / e ** 0.5  # nn.Linear's default initialisation
    w = ((torch.rand(d, e, num_classes, generator=g) * 2 - 1) * bound).to(x.device).requires_grad_()
    b = ((torch.rand(d, 1, num_classes, generator=g) * 2 - 1) * bound).to(x.device).requires_grad_()
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        logits = torch.bmm(x, w) + b
        # sum over draws of each draw's mean loss: the draws do not interact
        loss = F.cross_entropy(logits.reshape(-1, num_classes), y.reshape(-1), reduction="sum") / x.shape[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def fewshot_accuracy(model: torch.nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                     eval_images: np.ndarray, eval_labels: np.ndarray, shots: Sequence[int], draws: int = 10,
                     seed: int = 0, num_classes: int = 10, precision: str = "fp32", steps: int = 300,
                     lr: float = 1e-3, same_pool: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """k-shot accuracy of ``model``'s frozen backbone for each k in ``shots``: for each draw, a
    fresh linear head on k labelled ``train_images`` per class, tested on ``eval_images`` (embedded
    once for all k). Returns {k: (accuracies (draws,), predictions (draws, N); -1 where not scored)}.

    ``same_pool=True`` says the shots are drawn from the eval images themselves (a user's few
    labelled items): each draw is then scored only on the items it did not train on."""
    dev = next(model.parameters()).device
    eval_emb, _ = item_outputs(model, to_tensor(eval_images, dev), precision)
    results = {}
    for k in shots:
        idx = np.stack([draw_shots(train_labels, k, num_classes, seed=(seed, k, d)) for d in range(draws)])
        # Embed only the drawn images (at most draws x k x K of them), not the whole train split.
        uniq, inverse = np.unique(idx, return_inverse=True)
        emb, _ = item_outputs(model, to_tensor(train_images[uniq], dev), precision)
        x = emb[torch.from_numpy(inverse.reshape(idx.shape)).to(dev)]
        y = torch.from_numpy(train_labels[idx]).to(dev)
        with torch.enable_grad():
            w, b = fit_heads(x, y, num_classes, steps=steps, lr=lr, seed=seed + k)
        with torch.no_grad():
            pred = (torch.einsum("ne,dek->dnk", eval_emb, w) + b).argmax(-1).cpu().numpy()
        results[k] = score_draws(pred, idx, eval_labels, same_pool, k)
    return results


def score_draws(pred: np.ndarray, idx: np.ndarray, eval_labels: np.ndarray, same_pool: bool,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each draw's accuracy and predictions (draws, N); where the shots were drawn from the eval
    items themselves, the items a draw learned from are not scored (-1)."""
    scored = np.ones(pred.shape, bool)
    if same_pool:
        np.put_along_axis(scored, idx, False, axis=1)
        if not scored.any(1).all():
            raise DataError(f"{k} shots per class use every labelled item; nothing is left to test on")
    pred = np.where(scored, pred, -1)  # -1: this draw trained on that item
    return ((pred == eval_labels[None]) & scored).sum(1) / scored.sum(1), pred


def naming_accuracy(model: torch.nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                    eval_images: np.ndarray, eval_labels: np.ndarray, shots: Sequence[int], draws: int = 10,
                    seed: int = 0, num_classes: int = 10, precision: str = "fp32",
                    same_pool: bool = False) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The model's own classes named by k labelled images per class, nothing trained: each class
    takes, one to one, the label that makes the shots most likely (:func:`names_from_shots`). For
    a model whose classes are groups with no names yet (``relcomp train weak --unlabeled clusters``
    on few or no comparisons), where a head on 1 image per class would throw the groups away.

    Raises:
        ConfigError: a model that does not name classes."""
    if not model.classifies:
        raise ConfigError("--method names needs a model that names classes (supervised or weak)")
    dev = next(model.parameters()).device
    eval_pred = item_outputs(model, to_tensor(eval_images, dev), precision)[1].argmax(1).cpu().numpy()
    results = {}
    for k in shots:
        idx = np.stack([draw_shots(train_labels, k, num_classes, seed=(seed, k, d)) for d in range(draws)])
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = item_outputs(model, to_tensor(train_images[uniq], dev), precision)[1]
        logp = out.float().log_softmax(1).cpu().numpy()[inverse.reshape(idx.shape)]
        names = np.stack([names_from_shots(logp[d], train_labels[idx[d]], num_classes) for d in range(draws)])
        pred = np.take_along_axis(names, np.broadcast_to(eval_pred, (draws, len(eval_pred))), axis=1)
        results[k] = score_draws(pred, idx, eval_labels, same_pool, k)
    return results


def names_from_shots(logp: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """names[c]: the label of the model's class c, one to one, that makes the labelled shots most
    likely: the sum over the shots of log p(shot in the class named its label) is maximised
    (Hungarian). With hard counts an ambiguous shot (a 4 the model puts in the 9s with p = 0.6)
    ties with the clean 9 and may swap the two names; its log-probabilities do not."""
    from scipy.optimize import linear_sum_assignment

    gain = np.zeros((num_classes, num_classes))
    np.add.at(gain.T, labels, logp)      # gain[c, y]: sum of log p(c) over the shots labelled y
    rows, cols = linear_sum_assignment(-gain)
    names = np.arange(num_classes)
    names[rows] = cols
    return names


METHODS = ("linear", "names", "anchors", "cutpoints")


def ordinal_accuracy(model: torch.nn.Module, method: str, train_images: np.ndarray, train_labels: np.ndarray,
                     eval_images: np.ndarray, eval_labels: np.ndarray, shots: Sequence[int], draws: int = 10,
                     seed: int = 0, num_classes: int = 10, precision: str = "fp32",
                     same_pool: bool = False) -> dict[tuple[int, str | None], tuple[np.ndarray, np.ndarray]]:
    """Classes from the relation itself, no head trained: ``anchors`` (compare each eval image
    with k labelled anchors per class through the pair head) or ``cutpoints`` (thresholds on a
    ranker's score; k = 0 gives the two zero-shot fits). Returns {(k, zero-shot fit or None):
    (accuracies, predictions)}; ``same_pool`` as for :func:`fewshot_accuracy` (a user's labelled
    items: each draw is scored on the items it did not draw; a zero-shot fit uses their scores
    without their labels).

    Raises:
        ConfigError: a method the model cannot use.
    """
    dev = next(model.parameters()).device
    if model.relation != "gt":
        raise ConfigError(f"--method {method} needs a model trained on the gt relation")
    _, eval_out = item_outputs(model, to_tensor(eval_images, dev), precision)
    if method == "cutpoints":
        if not model.scores:
            raise ConfigError("--method cutpoints needs a model with one score per image (a ranker)")
        _, train_out = item_outputs(model, to_tensor(train_images, dev), precision)
        ts, es = train_out[:, 0].cpu().numpy(), eval_out[:, 0].cpu().numpy()
        return {key: score_draws(pred, idx, eval_labels, same_pool, key[0])
                for key, (idx, pred) in cutpoint_predictions(ts, train_labels, es, shots, num_classes, draws,
                                                             seed).items()}
    if method != "anchors":
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if min(shots) < 1:
        raise ConfigError("--method anchors needs at least 1 anchor per class")
    results = {}
    for k in shots:
        idx_all = np.stack([draw_shots(train_labels, k, num_classes, seed=(seed, k, d)) for d in range(draws)])
        preds = []
        for idx in idx_all:
            _, anchor_out = item_outputs(model, to_tensor(train_images[idx], dev), precision)
            preds.append(anchor_predict(model, eval_out, anchor_out, train_labels[idx], num_classes))
        results[(k, None)] = score_draws(np.stack(preds), idx_all, eval_labels, same_pool, k)
    return results


def fewshot_eval(run_dir: str | os.PathLike, shots: Sequence[int] = (1, 3), draws: int = 10, seed: int = 0,
                 device: str = "auto", steps: int = 300, lr: float = 1e-3,
                 labels: str | os.PathLike | None = None, method: str | None = None) -> dict[str, Any]:
    """Few-shot test accuracy of a run's frozen backbone for each k in ``shots``; it writes nothing
    (:func:`write_fewshot` writes ``fewshot.json`` and ``confusion-<k>shot.png``, pooled over draws).

    Each head is trained full batch with Adam at the paper's lr (1e-3, weight decay 1e-4) for
    ``steps`` steps; on the val split this did as well as or better than lr 1e-2 / 1e-1, more
    steps, or normalised embeddings.

    On a run trained on user data the shots come from its labels file (or ``labels``) and each
    draw is tested on the remaining labelled items.

    Raises:
        ConfigError: no shots, or draws < 1; user data without labels.
        DataError: a class with fewer than k labelled items.
    """
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, dev)
    method = method or model.fewshot_method
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if not shots or min(shots) < (0 if method == "cutpoints" else 1) or draws < 1:
        raise ConfigError("--shots must list positive integers (0 too for cutpoints) and --draws must be >= 1")
    precision = resolve_precision(cfg.precision, dev)
    pool = cfg.data.shot_pool(None if labels is None else str(labels))
    k_cls = cfg.num_classes if model.classifies else int(pool.test_y.max()) + 1
    if method == "linear":
        per_k = {(k, None): v for k, v in fewshot_accuracy(
            model, pool.train_x, pool.train_y, pool.test_x, pool.test_y, shots, draws, seed, k_cls, precision, steps,
            lr, same_pool=pool.same_pool).items()}
    elif method == "names":
        per_k = {(k, None): v for k, v in naming_accuracy(
            model, pool.train_x, pool.train_y, pool.test_x, pool.test_y, shots, draws, seed, k_cls, precision,
            same_pool=pool.same_pool).items()}
    else:
        per_k = ordinal_accuracy(model, method, pool.train_x, pool.train_y, pool.test_x, pool.test_y, shots, draws,
                                 seed, k_cls, precision, same_pool=pool.same_pool)
    result: dict[str, Any] = {"run_dir": str(run_dir), "model": cfg.model, "pairs": getattr(cfg.data, "pairs", None),
                              "method": method, "draws": draws, "seed": seed, "steps": steps, "lr": lr,
                              "shots": {shot_name(k, fit): {"k": k, "fit": fit,
                                                            **shot_summary(accs, pred, pool.test_y, k_cls)}
                                        for (k, fit), (accs, pred) in per_k.items()}}
    return result


def write_fewshot(run_dir: str | os.PathLike, result: dict[str, Any]) -> None:
    """``fewshot.json`` (``fewshot-METHOD.json``) and a confusion matrix per k in the run folder."""
    title, method = run_title(load_config(run_dir)), result["method"]
    for name, s in result["shots"].items():
        slug = f"{s['k']}shot" if method == "linear" else f"{method}-{s['k']}{'-' + s['fit'] if s['fit'] else ''}shot"
        plot_confusion(np.array(s["confusion_matrix"]), run_files(run_dir).fewshot_confusion(slug),
                       title=f"{title} + {name}-shot {method}", draws=s["n_pred"])
    write_json_atomic(run_files(run_dir).fewshot(method), result)


def shot_name(k: int, fit: str | None = None) -> str:
    """The key of a k-shot result in ``fewshot.json``: "3", or "0 (quantile)" for a zero-shot fit.
    Made here only and never parsed back (each result also holds its ``k`` and ``fit``)."""
    return str(k) if fit is None else f"{k} ({fit})"


def shot_summary(accs: np.ndarray, pred: np.ndarray, test_y: np.ndarray, k_cls: int) -> dict[str, Any]:
    """Mean, std (over draws), min, max, every accuracy, and the confusion matrix pooled over the
    draws' predictions (-1: not scored)."""
    from sklearn.metrics import confusion_matrix  # imported when needed: sklearn is slow to import

    cm = sum(confusion_matrix(test_y[p >= 0], p[p >= 0], labels=list(range(k_cls))) for p in pred)
    n = len(accs)
    return {"mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if n > 1 else 0.0, "min": float(accs.min()),
            "max": float(accs.max()), "n": n, "accuracies": [float(a) for a in accs], "confusion_matrix": cm.tolist(),
            "n_pred": len(pred)}
