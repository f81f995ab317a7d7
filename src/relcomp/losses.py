"""Losses for learning from relational comparisons, as objects: :class:`Loss` subclasses with one
``compute_loss(out, z, weight, noise)`` on a model's standard pair output, registered in
:data:`LOSSES`. The model knows nothing of the loss; the loss says what the output means
(:meth:`Loss.logits`) and knows its own noise correction. :func:`relation_loss` is the
cross-entropy of outcome logits that most of them share.

The weak model turns two class distributions into P(A > B) = sum_{i > j} p_A[i] p_B[j]. The
paper computes it with a K x K outer product and a triangular mask; here it is O(K) through the
cumulative distribution of B: P(A > B) = sum_i p_A[i] * P(B < i), in log space.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from .errors import ConfigError


def prob_first_greater(p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """P(A > B) for class distributions ``p_a``, ``p_b`` of shape (B, K); returns shape (B,).

    Uses the exclusive cumulative sum of ``p_b``: P(B < i) = cumsum(p_b)[i] - p_b[i].
    """
    below_b = torch.cumsum(p_b, dim=-1) - p_b
    return (p_a * below_b).sum(-1).clamp(0.0, 1.0)


def log_prob_first_greater(logp_a: torch.Tensor, logp_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(A > B) and log P(A <= B) from log-probabilities of shape (B, K), both shape (B,).

    Computed entirely in log space (logcumsumexp / logsumexp), so the loss stays finite and its
    gradient NaN-free even when a probability underflows to 0.
    """
    neg_inf = torch.full_like(logp_b[..., :1], float("-inf"))
    # log P(B < i): exclusive log-cumsum-exp of log p_B.
    log_below = torch.cat([neg_inf, torch.logcumsumexp(logp_b, -1)[..., :-1]], -1)
    # log P(B >= i): reverse inclusive log-cumsum-exp.
    log_at_or_above = torch.logcumsumexp(logp_b.flip(-1), -1).flip(-1)
    lp_gt = torch.logsumexp(logp_a + log_below, -1)
    lp_le = torch.logsumexp(logp_a + log_at_or_above, -1)
    return lp_gt, lp_le


def log_prob_relations(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """log [P(A < B), P(A > B), P(A = B)] of shape (B, 3) from two class log-distributions (B, K).

    P(A = B) = sum_i p_A[i] p_B[i] (the same class); the three sum to 1. Order matches the ``ge``
    outcome codes: 0 = A < B, 1 = A > B, 2 = tie.
    """
    neg_inf = torch.full_like(logp_b[..., :1], float("-inf"))
    log_below = torch.cat([neg_inf, torch.logcumsumexp(logp_b, -1)[..., :-1]], -1)            # log P(B < i)
    log_above = torch.cat([torch.logcumsumexp(logp_b.flip(-1), -1).flip(-1)[..., 1:], neg_inf], -1)  # log P(B > i)
    lp_gt = torch.logsumexp(logp_a + log_below, -1)
    lp_lt = torch.logsumexp(logp_a + log_above, -1)
    lp_eq = torch.logsumexp(logp_a + logp_b, -1)
    return torch.stack([lp_lt, lp_gt, lp_eq], -1)


def weighted_mean(per_pair: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Batch mean, each pair's loss multiplied by its weight (user comparisons may carry one)."""
    return per_pair.mean() if weight is None else (per_pair * weight).mean()


def relation_loss(out: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None,
                  noise: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Cross-entropy of an output against outcome codes ``z``, mean over the batch.

    A binary output (B,) is a logit: binary cross-entropy. For the weak model on ``gt`` that
    logit is log P(A > B) - log P(A <= B), so this is exactly -[z log P(A > B) + (1 - z) log P(A <= B)].
    An output (B, C) is C logits: softmax cross-entropy (the supervised model's loss too).

    ``noise`` = e > 0 applies forward correction for annotators who flip a fraction e of the
    outcomes at random: the model's clean probabilities P are mapped to the observed ones,
    P_obs = (1 - e) P + e (1 - P) for a binary outcome and (1 - e) P_k + e/2 (1 - P_k) for the
    three-way one (a flip picks one of the two other outcomes), and the loss is the likelihood of
    the observed outcome under P_obs. The model itself keeps predicting the clean relation.
    ``noise`` may be one rate or a tensor of per-pair rates in [0, 1) (each pair's annotator's,
    learned or given); a rate above 0.5 reads that annotator's outcomes inverted.
    """
    out = out.float()
    corrected = torch.is_tensor(noise) or noise > 0
    if out.ndim == 1:  # binary: logit of P(outcome 1)
        z = z.float()
        if not corrected:
            return weighted_mean(F.binary_cross_entropy_with_logits(out, z, reduction="none"), weight)
        e = torch.as_tensor(noise, dtype=torch.float32, device=out.device)
        log_e, log_keep = torch.log(e), torch.log1p(-e)
        lp1 = torch.logaddexp(log_keep + F.logsigmoid(out), log_e + F.logsigmoid(-out))
        lp0 = torch.logaddexp(log_keep + F.logsigmoid(-out), log_e + F.logsigmoid(out))
        return weighted_mean(-(z * lp1 + (1 - z) * lp0), weight)
    logp = out.log_softmax(-1)
    if corrected:
        e = torch.as_tensor(noise, dtype=torch.float32, device=out.device)
        e = e[:, None] if e.ndim == 1 else e
        log_rest = torch.log1p(-logp.exp().clamp(max=1 - 1e-6))  # log(1 - P_k)
        logp = torch.logaddexp(torch.log1p(-e) + logp, torch.log(e / 2) + log_rest)
    return weighted_mean(F.nll_loss(logp, z.long(), reduction="none"), weight)


def balance_loss(logits: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_mean || prior) of a batch of unlabeled items: p_mean is the mean of their predicted
    class distributions, ``prior`` the class proportions (uniform when None).

    A weak model that orders the classes well can still put their boundaries one class off (it
    then leaves a class nearly empty); on images nobody compared, this term asks the predictions
    as a whole to use every class in its proportion. With a uniform prior it is the negative
    entropy of p_mean plus log K. It is zero, with zero gradient, when p_mean equals the prior,
    however confident each prediction is.
    """
    p_mean = logits.float().softmax(-1).mean(0)
    if prior is None:
        prior = torch.full_like(p_mean, 1.0 / p_mean.numel())
    return (p_mean * (p_mean.clamp_min(1e-12).log() - prior.log())).sum()



def binary_logit(lp: torch.Tensor, relation: str, ties: str) -> torch.Tensor:
    """The logit of a binary outcome from log [P(A < B), P(A > B), P(A = B)] (last dimension):
    ``gt`` with ``ties="against"`` log P(A > B) - log P(A <= B) (the tie mass counts as "not
    greater"), with ``ties="free"`` log P(A > B) - log P(A < B); ``same`` log P(A = B) - log P(A != B)."""
    if relation == "same":
        return lp[..., 2] - torch.logsumexp(lp[..., :2], -1)
    if ties == "against":
        return lp[..., 1] - torch.logsumexp(lp[..., [0, 2]], -1)
    return lp[..., 1] - lp[..., 0]


class Loss:
    """The likelihood of observed outcome codes given a model's standard pair output.

    A model's pair output is its own and knows nothing of the loss: on a binary relation (``gt``,
    ``same``) either a logit (B,) or, for a model with a tie mass (the weak model), the three
    log-probabilities log [P(A < B), P(A > B), P(A = B)] (B, 3); on ``ge`` three logits (B, 3); for
    a model trained on labels (``relation=None``) K class logits. Each loss says what that output
    means as logits of the outcome codes (:meth:`logits`, which evaluation reads too) and computes
    its value, forward correction for flipped outcomes included (:meth:`compute_loss`).
    """

    name: ClassVar[str] = ""
    relations: ClassVar[tuple[str, ...]] = ("gt", "ge", "same")  # the relations it is a likelihood of
    corrects_noise: ClassVar[bool] = True   # takes a flip rate (forward correction, annotator model)
    ties: ClassVar[str] = "against"         # what the tie mass is on gt: "against" A > B, or "free"
    summary: ClassVar[str] = ""

    def __init__(self, relation: str | None = "gt"):
        self.relation = relation

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """The outcome codes' logits: (B,) for a binary outcome, (B, C) for C outcomes."""
        if self.relation in ("gt", "same") and out.ndim >= 2 and out.shape[-1] == 3:
            return binary_logit(out.float(), self.relation, self.ties)
        return out

    def compute_loss(self, out: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None,
                     noise: float | torch.Tensor = 0.0) -> torch.Tensor:
        return relation_loss(self.logits(out), z, weight, noise)

    def __call__(self, out: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None,
                 noise: float | torch.Tensor = 0.0) -> torch.Tensor:
        return self.compute_loss(out, z, weight, noise)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(relation={self.relation!r})"


class UnconditionalLoss(Loss):
    """-[z log P(A > B) + (1 - z) log P(A <= B)]: the tie mass counts as "not greater"; on every
    other relation and model, the cross-entropy of the observed outcome."""

    name = "unconditional"
    summary = "-[z log P(A>B) + (1-z) log P(A<=B)]; the tie mass counts as not greater"


class ConditionalLoss(Loss):
    """-log P(outcome | not a tie): the cross-entropy of log P(A > B) - log P(A < B); the tie mass
    is left free."""

    name = "conditional"
    relations = ("gt",)
    ties = "free"
    summary = "-log P(outcome | not a tie); the tie mass is left free"


class SymmetricLoss(Loss):
    """-[z log P(A > B) + (1 - z) log P(A < B)] on the three log-probabilities: the tie mass is a
    failure both ways. Evaluation reads log P(A > B) - log P(A < B).

    ``noise`` = e (one rate or per-pair rates) swaps the two orders as an annotator who flips a
    fraction e would: P_obs(A > B) = (1 - e) P(A > B) + e P(A < B), and the other way round; the
    tie mass stays a failure.
    """

    name = "symmetric"
    relations = ("gt",)
    ties = "free"
    summary = "-[z log P(A>B) + (1-z) log P(A<B)]; the tie mass is a failure both ways"

    def compute_loss(self, out, z, weight=None, noise=0.0):
        if out.ndim != 2 or out.shape[-1] != 3:
            raise ConfigError("the symmetric loss needs the three log-probabilities [A < B, A > B, tie]")
        lp = out.float()
        if torch.is_tensor(noise) or noise > 0:
            e = torch.as_tensor(noise, dtype=torch.float32, device=lp.device)
            keep, flip = torch.log1p(-e), torch.log(e)
            lp_gt = torch.logaddexp(keep + lp[:, 1], flip + lp[:, 0])
            lp_lt = torch.logaddexp(keep + lp[:, 0], flip + lp[:, 1])
            lp = torch.stack([lp_lt, lp_gt], -1)
        return weighted_mean(F.nll_loss(lp[:, :2], z.long(), reduction="none"), weight)


class PaperCodeLoss(Loss):
    """The paper's original bug: ``BCEWithLogits`` applied to the probability P(A > B) =
    sigmoid(logit), i.e. a second sigmoid. The target sigmoid(P) can never pass 0.73 and the
    gradients are weak. It takes no flip rate."""

    name = "paper-code"
    relations = ("gt",)
    corrects_noise = False
    summary = "BCEWithLogits on P(A>B): the paper's double sigmoid"

    def compute_loss(self, out, z, weight=None, noise=0.0):
        p = torch.sigmoid(self.logits(out).float())
        return weighted_mean(F.binary_cross_entropy_with_logits(p, z.float(), reduction="none"), weight)


# The registry of losses (``--loss``). A new loss is one class here, one line below, and a
# brute-force test in tests/test_losses.py; a model says which it takes (``RelcompModel.losses``).
LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (UnconditionalLoss, ConditionalLoss, SymmetricLoss,
                                                           PaperCodeLoss)}


def get_loss(name: str, relation: str | None = "gt") -> Loss:
    """The loss ``name`` for pairs of ``relation`` (None: a model trained on labels).

    Raises: ConfigError for an unknown name.
    """
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name](relation)


def pair_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Predicted outcome codes from outcome logits: logit > 0 (binary) or the argmax (several)."""
    return logits.argmax(-1) if logits.ndim == 2 else (logits > 0).long()
