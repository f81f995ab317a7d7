"""What a model that names classes learns from the images nobody compared: objects with one
``compute_loss(logits)`` on the class logits of ``views`` views of a batch of unlabeled items,
registered in :data:`OBJECTIVES` (``--unlabeled``).

- ``balance``: the class-balance term (:func:`relcomp.losses.balance_loss`): the batch's mean
  prediction should use every class in its proportion. It orders nothing and groups nothing.
- ``cluster``: the mutual information between the class predictions of two views of each item
  (IIC, Ji et al., ICCV 2019): an item and its view should fall in the same class, and the classes
  should be used evenly, so that the images form their own groups and the comparisons need only
  name them. The views of an image are two augmentations of it; of a feature vector (``--features``,
  a frozen ``hf:`` backbone), the vector and one of its nearest neighbours in feature space.

Neither is told any label; a collapse to a few classes shows in the log and in ``relcomp eval``
(:func:`relcomp.metrics.classes_used`).
"""
from __future__ import annotations

from typing import ClassVar

import torch

from .augment import augment
from .losses import balance_loss


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
    """A term on the class logits of the unlabeled items' views (a list of ``views`` tensors (B, K))."""

    views: ClassVar[int] = 1

    def __init__(self, prior: torch.Tensor | None = None):
        self.prior = prior  # the class proportions the classes should have (None: equal)

    def compute_loss(self, logits: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, logits: list[torch.Tensor]) -> torch.Tensor:
        return self.compute_loss(logits)


class BalanceObjective(Objective):
    """KL(mean prediction || class proportions) on one view."""

    def compute_loss(self, logits: list[torch.Tensor]) -> torch.Tensor:
        return balance_loss(logits[0], self.prior)


class ClusterObjective(Objective):
    """-I(c; c') between the classes of two views, plus the balance term where the classes should
    have proportions other than equal ones (the mutual information itself favours equal ones)."""

    views: ClassVar[int] = 2
    marginal_weight: ClassVar[float] = 1.0

    def compute_loss(self, logits: list[torch.Tensor]) -> torch.Tensor:
        p1, p2 = (x.float().softmax(-1) for x in logits)
        loss = -mutual_information(joint_distribution(p1, p2), self.marginal_weight)
        if self.prior is not None:
            loss = loss + balance_loss(torch.cat(logits), self.prior)
        return loss


# --unlabeled NAME -> its class; "auto" is the first (the default), "off" none.
OBJECTIVES: dict[str, type[Objective]] = {"balance": BalanceObjective, "cluster": ClusterObjective}
UNLABELED = ("auto", *OBJECTIVES, "off")


def objective_name(unlabeled: str) -> str | None:
    """The objective ``--unlabeled`` names: ``auto`` -> the default, ``off`` -> None."""
    if unlabeled == "off":
        return None
    return next(iter(OBJECTIVES)) if unlabeled == "auto" else unlabeled


def get_objective(unlabeled: str, prior: torch.Tensor | None = None) -> Objective | None:
    name = objective_name(unlabeled)
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
