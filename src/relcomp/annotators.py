"""Annotators, modelled: one flip rate per annotator, learned with the network.

``--annotator-model flip`` gives every annotator a of the comparisons file a rate
e_a = sigmoid(theta_a): the share of their outcomes that disagree with the clean relation. The
loss is forward-corrected per pair with its annotator's rate (the ``noise`` of the run's loss,
:func:`relcomp.losses.symmetric_loss` by default for the weak model, or
:func:`relcomp.losses.relation_loss`), and theta is trained by the same optimizer as the network, at a higher
learning rate (:data:`LR`), from e = :data:`START` for everyone. A reliable annotator's rate goes
towards 0, a spammer's towards 0.5 (their outcomes then carry no gradient), and an inverted
annotator's above 0.5 (their outcomes are then read inverted). The rates are identified because
most annotators are better than chance; if most were inverted, the network would learn the
inverse order.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

ANNOTATOR_MODELS = ("none", "flip")
START = 0.1     # every annotator's starting flip rate
LR = 0.05       # Adam learning rate of the rates' logits (the network's is --lr)
SPAMMER = (0.35, 0.65)  # a learned rate in this band: the annotator's outcomes are about chance


class AnnotatorFlips(nn.Module):
    """Per-annotator flip rates e = sigmoid(theta), indexed by the pairs' annotator ids."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.theta = nn.Parameter(torch.full((len(names),), math.log(START / (1 - START))))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.theta.float())[ids]

    def rates(self) -> list[float]:
        return torch.sigmoid(self.theta.detach().float()).cpu().tolist()

    def report(self, counts: list[int]) -> dict[str, dict[str, Any]]:
        """{annotator: {"flip_rate", "n", "flag"}}: flag is "spammer" (rate near 0.5), "inverted"
        (above the spammer band: outcomes used inverted) or None."""
        out = {}
        for name, e, n in zip(self.names, self.rates(), counts):
            flag = "spammer" if SPAMMER[0] <= e <= SPAMMER[1] else "inverted" if e > SPAMMER[1] else None
            out[name] = {"flip_rate": round(e, 4), "n": int(n), "flag": flag}
        return out


def build_annotators(model: str, pairs, world: int) -> AnnotatorFlips | None:
    """The annotator model of ``--annotator-model`` for the training ``pairs``.

    Raises:
        ConfigError: ``flip`` without an annotator column, or under several processes.
    """
    if model == "none":
        return None
    if pairs is None or pairs.annotator is None:
        raise ConfigError("--annotator-model flip needs comparisons with an annotator column")
    if world > 1:
        raise ConfigError("--annotator-model flip runs in one process (the rates are not synchronised across ranks)")
    return AnnotatorFlips(pairs.meta["annotators"])


def annotator_counts(pairs, n: int) -> list[int]:
    return torch.bincount(torch.from_numpy(pairs.annotator.astype("int64")), minlength=n).tolist()
