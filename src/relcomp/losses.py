"""Losses for learning from relational comparisons: one contract, ``loss(out, z, weight, noise)``.

``out`` is a model's ``forward`` output: the logit of the binary relation (B,) (``gt``: A > B;
``same``: same class), or logits (B, C) over C outcomes (``ge``: [A < B, A > B, tie]; the
supervised model: K classes). :func:`relation_loss` is the likelihood of the observed outcome
codes ``z`` for every model and relation; :func:`paper_code_loss` is the one exception, kept
explicit: the paper's original bug.

The weak model turns two class distributions into P(A > B) = sum_{i > j} p_A[i] p_B[j]. The
paper computes it with a K x K outer product and a triangular mask; here it is O(K) through the
cumulative distribution of B: P(A > B) = sum_i p_A[i] * P(B < i), in log space.
"""
from __future__ import annotations

from collections.abc import Callable

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


def paper_code_loss(out: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None,
                    noise: float = 0.0) -> torch.Tensor:
    """The paper's original bug, for the weak model on ``gt``: ``BCEWithLogits`` applied to the
    probability P(A > B) = sigmoid(out), i.e. a second sigmoid. The target sigmoid(P) can never
    pass 0.73 and the gradients are weak. ``noise`` is not supported (validated by the config)."""
    p = torch.sigmoid(out.float())
    return weighted_mean(F.binary_cross_entropy_with_logits(p, z.float(), reduction="none"), weight)


def symmetric_loss(out: torch.Tensor, z: torch.Tensor, weight: torch.Tensor | None = None,
                   noise: float | torch.Tensor = 0.0) -> torch.Tensor:
    """-[z log P(A > B) + (1 - z) log P(A < B)] for the weak model on ``gt``, whose training output
    under this loss is the three log-probabilities [A < B, A > B, tie] (B, 3): the tie mass counts
    as a failure on both sides.

    ``noise`` = e (one rate or per-pair rates) swaps the two orders as an annotator who flips a
    fraction e would: P_obs(A > B) = (1 - e) P(A > B) + e P(A < B), and the other way round; the
    tie mass stays a failure.
    """
    lp = out.float()
    if torch.is_tensor(noise) or noise > 0:
        e = torch.as_tensor(noise, dtype=torch.float32, device=lp.device)
        keep, flip = torch.log1p(-e), torch.log(e)
        lp_gt = torch.logaddexp(keep + lp[:, 1], flip + lp[:, 0])
        lp_lt = torch.logaddexp(keep + lp[:, 0], flip + lp[:, 1])
        lp = torch.stack([lp_lt, lp_gt], -1)
    return weighted_mean(F.nll_loss(lp, z.long(), reduction="none"), weight)


# The registry of losses (``--loss``): the likelihood of an observed outcome. For the weak model on
# ``gt`` the three differ in what an unequal pair says of the tie mass P(A = B) (equal labels are
# never shown): ``unconditional`` is -[z log P(A > B) + (1 - z) log P(A <= B)] (a tie counts as
# "not greater"), ``conditional`` is -log P(outcome | not a tie), the cross-entropy of the logit
# log P(A > B) - log P(A < B), and ``symmetric`` counts tie mass as wrong both ways. The model gives
# the output each one needs (``WeakModel.likelihood``), so ``unconditional`` and ``conditional``
# are the same function, :func:`relation_loss`, on different logits. Every other model has
# P(A > B) + P(A < B) = 1 on ``gt`` and knows only ``unconditional``.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {"unconditional": relation_loss, "conditional": relation_loss,
                                                  "symmetric": symmetric_loss, "paper-code": paper_code_loss}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """Raises: ConfigError for an unknown name."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]


def pair_predictions(out: torch.Tensor) -> torch.Tensor:
    """Predicted outcome codes from outputs: logit > 0 (binary) or the argmax (several outcomes)."""
    return out.argmax(-1) if out.ndim == 2 else (out > 0).long()
