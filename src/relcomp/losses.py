"""Losses for learning from relational comparisons.

The weak model turns two class distributions into P(A > B) = sum_{i > j} p_A[i] p_B[j]. The
paper computes it with a K x K outer product and a triangular mask; here it is O(K) through the
cumulative distribution of B: P(A > B) = sum_i p_A[i] * P(B < i).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError

WEAK_LOSSES = ("correct", "paper-code")


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


def _mean(per_pair: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Batch mean, each pair's loss multiplied by its weight (user comparisons may carry one)."""
    return per_pair.mean() if weight is None else (per_pair * weight).mean()


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


def weak_relation_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, z: torch.Tensor,
                       mode: str = "correct", weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the weak model's P(A > B) against ``z`` (1 where A > B), mean over
    the batch (each pair's term multiplied by ``weight`` where given).

    ``mode="correct"``: -[z log P + (1 - z) log (1 - P)] in log space.
    ``mode="paper-code"``: the paper's original bug, ``BCEWithLogits`` applied to the probability P,
    i.e. a second sigmoid: the target P(A > B) = sigmoid(P) can never pass 0.73, gradients are weak.

    Raises:
        ConfigError: unknown mode.
    """
    la, lb = logits_a.float().log_softmax(-1), logits_b.float().log_softmax(-1)
    z = z.float()
    if mode == "correct":
        lp_gt, lp_le = log_prob_first_greater(la, lb)
        return _mean(-(z * lp_gt + (1 - z) * lp_le), weight)
    if mode == "paper-code":
        p = prob_first_greater(la.exp(), lb.exp())
        return _mean(F.binary_cross_entropy_with_logits(p, z, reduction="none"), weight)
    raise ConfigError(f"unknown weak-model loss {mode!r}; choose from {', '.join(WEAK_LOSSES)}")


def siamese_loss(logit: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on the relation logit (each pair's term multiplied by ``weight`` where given)."""
    return _mean(F.binary_cross_entropy_with_logits(logit.float(), z.float(), reduction="none"), weight)


# ----------------------------------------------------------------------------------------------
# Every relation, every model: the pair output is a logit (B,) for the binary relations (gt: A > B;
# same: same class) or logits (B, 3) over [A < B, A > B, tie] for ge.

from .data.pairs import RELATIONS  # noqa: E402 - the codes live with the pair sets


def relation_loss(out: torch.Tensor, z: torch.Tensor, noise: float = 0.0,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of a pair output against outcome codes ``z``, mean over the batch.

    ``noise`` = e > 0 applies forward correction for annotators who flip a fraction e of the
    outcomes at random: the model's clean probabilities P are mapped to the observed ones,
    P_obs = (1 - e) P + e (1 - P) for a binary outcome and (1 - e) P_k + e/2 (1 - P_k) for the
    three-way one (a flip picks one of the two other outcomes), and the loss is the likelihood of
    the observed outcome under P_obs. The model itself keeps predicting the clean relation.
    """
    out = out.float()
    if out.ndim == 1:  # binary: logit of P(outcome 1)
        z = z.float()
        if noise <= 0:
            return _mean(F.binary_cross_entropy_with_logits(out, z, reduction="none"), weight)
        log_e, log_keep = torch.log(torch.tensor(noise)), torch.log(torch.tensor(1 - 2 * noise))
        lp1 = torch.logaddexp(log_e, log_keep + F.logsigmoid(out))
        lp0 = torch.logaddexp(log_e, log_keep + F.logsigmoid(-out))
        return _mean(-(z * lp1 + (1 - z) * lp0), weight)
    logp = out.log_softmax(-1)
    if noise > 0:
        # (1 - e) P + e/2 (1 - P) = e/2 + (1 - 3e/2) P
        logp = torch.logaddexp(torch.log(torch.tensor(noise / 2)), torch.log(torch.tensor(1 - 1.5 * noise)) + logp)
    return _mean(F.nll_loss(logp, z.long(), reduction="none"), weight)


def pair_predictions(out: torch.Tensor) -> torch.Tensor:
    """Predicted outcome codes from pair outputs: logit > 0 (binary) or the argmax (three-way)."""
    return out.argmax(-1) if out.ndim == 2 else (out > 0).long()
