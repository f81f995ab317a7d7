"""Calibration (ECE, reliability diagram) and ranking metrics (Spearman, Kendall, NDCG), each
against a brute-force computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from relcomp.losses import get_loss
from relcomp.metrics import calibration, item_scores, prob_greater, ranking_metrics
from relcomp.models import build_model

L = get_loss("symmetric")  # the weak model's default: how its outputs are read as P(A > B)


def _ece_brute(conf, hit, bins):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [k for k in range(len(conf)) if (lo <= conf[k] < hi) or (b == bins - 1 and conf[k] == 1.0)]
        if members:
            gap = abs(sum(hit[k] for k in members) / len(members) - sum(conf[k] for k in members) / len(members))
            total += len(members) / len(conf) * gap
    return total


def test_ece_brute_force_binary_and_three_way():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    z = (rng.random(500) < p ** 2).astype(int)  # over-confident in "A > B"
    cal = calibration(np.stack([1 - p, p], 1), z, bins=10)
    assert cal["ece"] == pytest.approx(_ece_brute(p, z, 10), abs=1e-9) and cal["of"] == "P(z=1)"
    assert sum(b["n"] for b in cal["bins"]) == 500
    probs = rng.dirichlet(np.ones(3), 400)
    z3 = rng.integers(0, 3, 400)
    cal3 = calibration(probs, z3, bins=7)
    hit = (probs.argmax(1) == z3).astype(float)
    assert cal3["ece"] == pytest.approx(_ece_brute(probs.max(1), hit, 7), abs=1e-9) and cal3["of"] == "top outcome"


def test_ece_is_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(1)
    p = rng.random(200_000)
    z = (rng.random(200_000) < p).astype(int)
    assert calibration(np.stack([1 - p, p], 1), z)["ece"] < 0.01
    sharp = np.where(p > 0.5, 0.99, 0.01)  # right 75% of the time, claims 99%
    assert calibration(np.stack([1 - sharp, sharp], 1), z)["ece"] > 0.2


def _dcg(gains_in_order):
    return sum(g / math.log2(r + 2) for r, g in enumerate(gains_in_order))


def test_ranking_metrics_brute_force():
    labels = np.array([3, 0, 2, 1, 4, 2])
    score = np.array([0.9, 0.1, 0.3, 0.4, 0.8, 0.5])
    m = ranking_metrics(score, labels)
    concordant = discordant = ties_y = 0
    for a in range(6):
        for b in range(a + 1, 6):
            s = np.sign(score[a] - score[b]) * np.sign(labels[a] - labels[b])
            concordant += s > 0
            discordant += s < 0
            ties_y += labels[a] == labels[b]
    pairs = 15
    tau_b = (concordant - discordant) / math.sqrt(pairs * (pairs - ties_y))  # no ties in the score
    assert m["kendall_tau"] == pytest.approx(tau_b)
    ideal = _dcg(sorted(labels, reverse=True))
    assert m["ndcg"] == pytest.approx(_dcg(labels[np.argsort(-score)]) / ideal)
    perfect = ranking_metrics(labels.astype(float), labels)
    assert perfect["spearman_rho"] == pytest.approx(1) and perfect["kendall_tau"] == pytest.approx(1)
    assert perfect["ndcg"] == pytest.approx(1)
    assert ranking_metrics(-labels.astype(float), labels)["kendall_tau"] == pytest.approx(-1)


def test_item_scores_brute_force():
    torch.manual_seed(0)
    model = build_model("weak", 4, relation="gt").eval()
    out = torch.randn(7, 4)
    score = item_scores(model, L, out, references=100)
    for a in range(7):
        ps = [float(prob_greater(model, L, out[a:a + 1], out[b:b + 1])) for b in range(7) if b != a]
        assert score[a] == pytest.approx(sum(ps) / 6, abs=1e-5)
    with pytest.raises(Exception, match="no order"):
        prob_greater(build_model("weak", 4, relation="same"), get_loss("unconditional", "same"), out[:1], out[1:2])


def test_mc_dropout_draws_vary_only_with_dropout():
    from relcomp.metrics import mc_dropout_prob_greater

    torch.manual_seed(0)
    x = torch.rand(2, 1, 28, 28)
    model = build_model("weak", 10, dropout=0.5)
    draws = mc_dropout_prob_greater(model, L, x[:1], x[1:], samples=64, seed=3)
    assert draws.shape == (64,) and draws.std() > 1e-4 and model.training  # the mode is restored
    again = mc_dropout_prob_greater(model, L, x[:1], x[1:], samples=64, seed=3)
    assert np.array_equal(draws, again)  # the same seed gives the same draws
    model.eval()
    with torch.no_grad():
        out = model.item_output(model.embed(x))
    p = float(prob_greater(model, L, out[:1], out[1:]))
    assert abs(np.mean(draws) - p) < 0.2 and not model.training
    assert mc_dropout_prob_greater(build_model("weak", 10, dropout=0.0), L, x[:1], x[1:]) is None
