"""Ordinal analysis of embeddings: PC1 projection, Spearman rho, discovered ordering, t-SNE.

The sign of a principal component is arbitrary, so the projection is oriented to make rho
positive and |rho| is reported; the ordering lists the classes by the median of the oriented
projection, so a perfect ordinal embedding reads "0→1→2→…→9".
"""
from __future__ import annotations

from typing import Any

import numpy as np


def pc1_ordering(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Project on the first principal component; return |rho|, the signed rho of the raw
    projection, the oriented projection and the class ordering by median."""
    from scipy.stats import spearmanr  # imported when needed, as every scipy and sklearn import here
    from sklearn.decomposition import PCA

    proj = PCA(n_components=1, svd_solver="full").fit_transform(np.asarray(embeddings, np.float64))[:, 0]
    rho = float(spearmanr(proj, labels).statistic)
    if not np.isfinite(rho):
        rho = 0.0
    oriented = proj if rho >= 0 else -proj
    classes = np.unique(labels)
    medians = np.array([np.median(oriented[labels == c]) for c in classes])
    order = classes[np.argsort(medians, kind="stable")]
    return {"rho": abs(rho), "rho_raw": rho, "ordering": "→".join(str(int(c)) for c in order),
            "order": [int(c) for c in order], "projection": oriented}


def stratified_subsample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices with the classes in their natural proportions, sorted."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(labels), size=n, replace=False))


def tsne_2d(embeddings: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA initialisation) of the rows of ``embeddings``."""
    from sklearn.manifold import TSNE

    perplexity = min(perplexity, max(5.0, (len(embeddings) - 1) / 3))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity,
                learning_rate="auto").fit_transform(np.asarray(embeddings, np.float32))


def match_clusters(pred: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The one-to-one map cluster -> class that maximises agreement (Hungarian algorithm on the
    confusion matrix); returns ``mapping`` with ``mapping[cluster] = class``."""
    from scipy.optimize import linear_sum_assignment

    k = max(k, int(pred.max(initial=0)) + 1, int(labels.max(initial=0)) + 1)
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (pred, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = np.arange(k)
    mapping[rows] = cols
    return mapping
