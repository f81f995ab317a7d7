"""Classes from relations without a classifier head.

* Cut-points: a ranker gives each image one score; K ordered classes are K - 1 increasing
  thresholds on it. With k labelled images per class, the threshold between classes c and c + 1
  is the midpoint of their median scores; with none and a known K, thresholds come from a 1-D
  k-means of the scores (``kmeans``) or from equal class proportions (``quantile``).
* Ordinal anchors: a relation head compares a test image with k labelled anchors of every class;
  the class is the one whose position best explains which anchors the image beats.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import ConfigError, DataError
from .metrics import draw_shots

ZERO_SHOT = ("kmeans", "quantile")


def fit_cutpoints(scores: np.ndarray, num_classes: int, labels: np.ndarray | None = None,
                  method: str = "kmeans", seed: int = 0, proportions: Sequence[float] | None = None) -> np.ndarray:
    """K - 1 increasing thresholds on ``scores``.

    With ``labels`` (the classes of ``scores``; every class present): midpoints of adjacent class
    medians. Without: ``kmeans`` (midpoints of the sorted 1-D k-means centres) or ``quantile``
    (class proportions as given, lowest class first; equal when None).

    Raises:
        DataError: a class without labelled scores. ConfigError: unknown method.
    """
    scores = np.asarray(scores, np.float64)
    if labels is not None:
        labels = np.asarray(labels)
        missing = [c for c in range(num_classes) if not (labels == c).any()]
        if missing:
            raise DataError(f"no labelled score for class(es) {missing}")
        med = np.array([np.median(scores[labels == c]) for c in range(num_classes)])
        cuts = (med[:-1] + med[1:]) / 2
        return np.maximum.accumulate(cuts)  # ordered, even if two medians came out swapped
    if method == "quantile":
        if proportions is None:
            return np.quantile(scores, np.arange(1, num_classes) / num_classes)
        p = np.asarray(proportions, np.float64)
        if len(p) != num_classes or (p < 0).any() or p.sum() <= 0:
            raise ConfigError(f"proportions must be {num_classes} non-negative numbers")
        return np.quantile(scores, np.cumsum(p / p.sum())[:-1])
    if method == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit(scores[:, None])
        c = np.sort(km.cluster_centers_[:, 0])
        return (c[:-1] + c[1:]) / 2
    raise ConfigError(f"unknown zero-shot cut-point method {method!r}; choose from {', '.join(ZERO_SHOT)}")


def apply_cutpoints(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Class of each score: the number of thresholds below it."""
    return np.searchsorted(cuts, scores, side="right")


def cutpoint_predictions(train_scores: np.ndarray, train_labels: np.ndarray, eval_scores: np.ndarray,
                         shots: Sequence[int], num_classes: int, draws: int = 10,
                         seed: int = 0) -> dict[tuple[int, str | None], tuple[np.ndarray, np.ndarray]]:
    """Cut-point classes of the eval scores for each k in ``shots``: {(k, zero-shot fit or None):
    (the shots' indices (draws, k x K), predictions (draws, N))}. k = 0 gives both zero-shot fits,
    one draw each, fitted on the train scores without their labels (no shots: indices (1, 0))."""
    out: dict[tuple[int, str | None], tuple[np.ndarray, np.ndarray]] = {}
    for k in shots:
        if k == 0:
            for fit in ZERO_SHOT:
                cuts = fit_cutpoints(train_scores, num_classes, method=fit, seed=seed)
                out[(0, fit)] = np.zeros((1, 0), np.int64), apply_cutpoints(eval_scores, cuts)[None]
            continue
        idx = np.stack([draw_shots(train_labels, k, num_classes, seed=(seed, k, d)) for d in range(draws)])
        out[(k, None)] = idx, np.stack([apply_cutpoints(eval_scores, fit_cutpoints(train_scores[i], num_classes,
                                                                                  train_labels[i])) for i in idx])
    return out


@torch.no_grad()
def anchor_predict(model: torch.nn.Module, eval_out: torch.Tensor, anchor_out: torch.Tensor,
                   anchor_labels: np.ndarray, num_classes: int, chunk: int = 256) -> np.ndarray:
    """Ordinal-anchor classification with the model's own relation head.

    For each image x and class c, s_c = mean over the anchors a of class c of
    (P(x > a) + 1 - P(a > x)) / 2 (both orders, as the head need not be antisymmetric). If x is
    in class y it should beat every anchor below y and none above, so the prediction is the y
    with the smallest cost sum_{c < y} (1 - s_c) + sum_{c > y} s_c (anchors of y itself are not
    counted: the ``gt`` relation never saw equal labels).
    """
    lab = torch.as_tensor(anchor_labels, device=eval_out.device)
    onehot = torch.nn.functional.one_hot(lab.long(), num_classes).float()          # (m, K)
    onehot = onehot / onehot.sum(0, keepdim=True).clamp(min=1)
    m = len(anchor_out)
    preds = []
    for k in range(0, len(eval_out), chunk):
        x = eval_out[k:k + chunk]
        n = len(x)
        xa = x.repeat_interleave(m, 0)
        aa = anchor_out.repeat(n, 1)
        p_fwd = torch.sigmoid(model.pair_output(xa, aa)).view(n, m)
        p_bwd = torch.sigmoid(model.pair_output(aa, xa)).view(n, m)
        s = ((p_fwd + 1 - p_bwd) / 2) @ onehot                                        # (n, K)
        below = torch.cumsum(1 - s, 1) - (1 - s)        # sum_{c < y} (1 - s_c)
        above = s.sum(1, keepdim=True) - torch.cumsum(s, 1)  # sum_{c > y} s_c
        preds.append((below + above).argmin(1))
    return torch.cat(preds).cpu().numpy()
