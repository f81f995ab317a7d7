"""What a model that names classes learns from the images nobody compared: objects with one
``compute_loss(logits)`` on the class logits of ``views`` views of a batch of unlabeled items,
registered in :data:`OBJECTIVES` (``--unlabeled``).

- ``balance``: the class-balance term (:func:`relcomp.losses.balance_loss`): the batch's mean
  prediction should use every class in its proportion. It orders nothing and groups nothing.
- ``clusters``: the items are grouped once before training (:mod:`relcomp.clusters`: UMAP and a
  Gaussian mixture), the groups are named by the comparisons (the order of the groups that agrees
  with the most of them), and each item is pushed towards its group's class, weighted by how sure
  the mixture is of its group. Images, your own images and feature vectors alike.
- ``iic``: the mutual information between the class predictions of two views of each item
  (IIC, Ji et al., ICCV 2019): an item and its view should fall in the same class, and the classes
  should be used evenly, so that the images form their own groups and the comparisons need only
  name them. The views of an image are two augmentations of it; of a feature vector (``--features``,
  a frozen ``hf:`` backbone), the vector and one of its nearest neighbours in feature space.

None is told any label; a collapse to a few classes shows in the log and in ``relcomp eval``
(:func:`relcomp.metrics.classes_used`).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .augment import augment
from .clusters import agreement, cached_clusters, cluster_support, name_clusters
from .data.splits import Data
from .losses import balance_loss
from .metrics import cluster_accuracy


def joint_distribution(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """The K x K joint distribution of the classes of two views, P[i, j] = mean over the batch of
    p1[i] p2[j], made symmetric (the views are exchangeable)."""
    joint = p1.float().t() @ p2.float() / len(p1)
    return (joint + joint.t()) / 2


def mutual_information(joint: torch.Tensor, marginal_weight: float = 1.0) -> torch.Tensor:
    """I(c; c') = sum P[i, j] log(P[i, j] / (P[i] P[j])) of a joint distribution; a
    ``marginal_weight`` above 1 rewards even marginals more (IIC's lambda), which keeps the
    classes from emptying early in training."""
    joint = joint.clamp_min(1e-12)
    pi, pj = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    return (joint * (joint.log() - marginal_weight * (pi.log() + pj.log()))).sum()


class Objective:
    """A term on the class logits of the unlabeled items' views (a list of ``views`` tensors (B, K))
    of the training items ``rows``."""

    views: ClassVar[int] = 1

    def __init__(self, prior: torch.Tensor | None = None):
        self.prior = prior  # the class proportions the classes should have (None: equal)

    def prepare(self, data: Data, k: int, seed: int, progress: bool = False) -> dict | None:
        """Called once before training with the run's data (every training item, the comparisons);
        returns what the run folder should record of it (None: nothing)."""
        return None

    def compute_loss(self, logits: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, logits: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        return self.compute_loss(logits, rows)


class BalanceObjective(Objective):
    """KL(mean prediction || class proportions) on one view."""

    def compute_loss(self, logits: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        return balance_loss(logits[0], self.prior)


class ClustersObjective(Objective):
    """Cross-entropy towards each item's group's class (the groups named by the comparisons),
    weighted by the mixture's posterior of the group. Proportions come with the groups."""

    targets: torch.Tensor
    weights: torch.Tensor

    def prepare(self, data: Data, k: int, seed: int, progress: bool = False) -> dict:
        x, pairs = data.train_x, data.train_pairs
        found = cached_clusters(x.cpu().numpy(), k, seed, progress)
        if pairs is None or len(pairs) == 0:
            support = np.zeros((k, k))
        else:
            support = cluster_support(found.labels[pairs.i], found.labels[pairs.j], pairs.z, k, pairs.w)
        rank = name_clusters(support)
        self.targets = torch.from_numpy(rank[found.labels]).to(x.device)
        self.weights = torch.from_numpy(found.confidence).to(x.device)
        return {"sizes": found.sizes(), "class_of_group": rank.tolist(), "evidence": float(support.sum()),
                "agreement": agreement(rank, support), "mean_confidence": float(found.confidence.mean()),
                **diagnosis(found.labels, rank, data.train_y.cpu().numpy(), k)}

    def compute_loss(self, logits: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        w = self.weights[rows]
        ce = torch.nn.functional.cross_entropy(logits[0].float(), self.targets[rows], reduction="none")
        return (ce * w).sum() / w.sum().clamp_min(1e-6)


def diagnosis(groups: np.ndarray, rank: np.ndarray, labels: np.ndarray, k: int) -> dict:
    """Where the training items' labels are known (MNIST; a user's labelled items), how well the
    groups match them one-to-one after the fact, and how many items their names get right: a
    diagnosis only, never used to choose anything."""
    known = (labels >= 0) & (labels < k)
    if not known.any():
        return {}
    g, y = groups[known], labels[known]
    return {"labelled_items": int(known.sum()), "group_accuracy": cluster_accuracy(g, y, k),
            "named_accuracy": float((rank[g] == y).mean())}


class IICObjective(Objective):
    """-I(c; c') between the classes of two views, plus the balance term where the classes should
    have proportions other than equal ones (the mutual information itself favours equal ones)."""

    views: ClassVar[int] = 2
    marginal_weight: ClassVar[float] = 1.0

    def compute_loss(self, logits: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        p1, p2 = (x.float().softmax(-1) for x in logits)
        loss = -mutual_information(joint_distribution(p1, p2), self.marginal_weight)
        if self.prior is not None:
            loss = loss + balance_loss(torch.cat(logits), self.prior)
        return loss


# --unlabeled NAME -> its class; "auto" picks one (auto_objective), "off" none.
OBJECTIVES: dict[str, type[Objective]] = {"balance": BalanceObjective, "clusters": ClustersObjective,
                                           "iic": IICObjective}
UNLABELED = ("auto", *OBJECTIVES, "off")
# Where `auto` groups the images nobody compared: measured on MNIST's val split with one seed
# (docs/fewer-comparisons.md, "Which --unlabeled should be the default"): the groups win by 10
# points at 1k comparisons on 50k images and by 6 on 20k, tie at 10k and 50k comparisons, and
# lose by 30-68 points on 10k and 5k images, whose groups mix digits.
AUTO_GROUPS_MIN_IMAGES = 20_000
AUTO_GROUPS_MAX_COMPARISONS = 10_000


def auto_objective(images: int, comparisons: int, groups_measured: bool) -> str:
    """What ``--unlabeled auto`` is for ``images`` unlabeled items and ``comparisons`` training
    pairs: ``clusters`` from 20k images and under 10k comparisons, on data whose grouping was
    measured (:attr:`~relcomp.data.splits.Inputs.groups_measured`); else ``balance``."""
    few = images >= AUTO_GROUPS_MIN_IMAGES and comparisons < AUTO_GROUPS_MAX_COMPARISONS
    return "clusters" if few and groups_measured else "balance"


def objective_name(unlabeled: str, images: int = 0, comparisons: int = 0, groups_measured: bool = False) -> str | None:
    """The objective ``--unlabeled`` names (``auto``: :func:`auto_objective` of the data), or
    None for ``off``."""
    if unlabeled == "off":
        return None
    return auto_objective(images, comparisons, groups_measured) if unlabeled == "auto" else unlabeled


def get_objective(name: str | None, prior: torch.Tensor | None = None) -> Objective | None:
    """The objective called ``name`` (from :func:`objective_name`), or None."""
    return None if name is None else OBJECTIVES[name](prior)


def nearest_neighbours(x: torch.Tensor, k: int = 10, chunk: int = 1024) -> torch.Tensor:
    """(N, k) indices of each row's k nearest other rows of ``x`` (N, D) by cosine similarity of
    the centred vectors: the second view of a feature vector. (Not standardised per dimension:
    that would blow up dimensions that hardly vary, such as the border pixels of raw images.)"""
    z = torch.nn.functional.normalize(x.float() - x.float().mean(0), dim=1)
    k = min(k, len(x) - 1)
    out = []
    for a in range(0, len(z), chunk):
        sim = z[a:a + chunk] @ z.t()
        sim[torch.arange(len(sim)), torch.arange(a, a + len(sim))] = -2.0  # never itself
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def views(x_all: torch.Tensor, rows: torch.Tensor, n: int, mode: str,
          neighbours: torch.Tensor | None) -> list[torch.Tensor]:
    """``n`` views of the items ``rows`` of ``x_all``: augmentations of images (``mode``; two
    views of an unaugmented run are shifted, so that they differ), or for feature vectors the
    vector and a random one of its ``neighbours``."""
    x = x_all[rows]
    if x.ndim == 4:
        mode = "shift" if n > 1 and mode == "off" else mode
        return [augment(x, mode) for _ in range(n)]
    if n == 1:
        return [x]
    pick = torch.randint(neighbours.shape[1], (len(rows),), device=rows.device)
    return [x, x_all[neighbours[rows, pick]]]
