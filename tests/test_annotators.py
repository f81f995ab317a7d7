"""Annotators, modelled (`--annotator-model flip`): per-pair forward correction against a brute
force, the learned rates of a simulated crowd on real MNIST, and the errors."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from relcomp.annotators import AnnotatorFlips
from relcomp.cli import main
from relcomp.losses import relation_loss


def test_per_pair_noise_brute_force():
    torch.manual_seed(0)
    logit, z = torch.randn(6), torch.tensor([1, 0, 1, 1, 0, 0])
    e = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.8, 0.95])
    want = 0.0
    for k in range(6):
        p = 1 / (1 + math.exp(-float(logit[k])))
        p_obs = (1 - e[k]) * p + e[k] * (1 - p)
        want -= math.log(p_obs if z[k] == 1 else 1 - p_obs)
    assert float(relation_loss(logit, z, noise=e)) == pytest.approx(want / 6, rel=1e-5)
    # one rate for every pair is the same as that rate per pair (the --noise-correction path)
    assert float(relation_loss(logit, z, noise=0.2)) == pytest.approx(float(relation_loss(logit, z, noise=torch.full((6,), 0.2))))
    three, z3 = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    e3 = torch.tensor([0.1, 0.4, 0.7, 0.0])
    p = three.softmax(-1)
    want3 = -sum(math.log((1 - e3[k]) * p[k, z3[k]] + e3[k] / 2 * (1 - p[k, z3[k]])) for k in range(4)) / 4
    assert float(relation_loss(three, z3, noise=e3)) == pytest.approx(float(want3), rel=1e-5)


def test_rates_get_gradient_and_flags():
    ann = AnnotatorFlips(["good", "spam", "inv"])
    assert ann.rates() == pytest.approx([0.1, 0.1, 0.1])
    logit = torch.tensor([4.0, 4.0, 4.0])  # the model is sure A > B
    loss = relation_loss(logit, torch.tensor([0, 0, 0]), noise=ann(torch.tensor([2, 2, 2])))
    loss.backward()
    assert ann.theta.grad[2] < 0 and ann.theta.grad[:2].abs().max() == 0  # only "inv" is pushed, towards more flips
    with torch.no_grad():
        ann.theta.copy_(torch.tensor([-3.0, 0.1, 2.5]))
    r = ann.report([10, 20, 30])
    assert [r[k]["flag"] for k in ("good", "spam", "inv")] == [None, "spammer", "inverted"] and r["inv"]["n"] == 30


def _crowd(path, labels, n_pairs, annotators, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n_pairs:
        i, j = rng.integers(0, len(labels), 2)
        if i == j or labels[i] == labels[j]:
            continue
        name, e = annotators[len(rows) % len(annotators)]
        z = int(labels[i] > labels[j])
        rows.append((i, j, 1 - z if rng.random() < e else z, name))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("a", "b", "outcome", "annotator"), *rows])


@pytest.mark.mnist
@pytest.mark.slow
def test_simulated_crowd_rates_are_learned(mnist, data_dir, tmp_path, capsys):
    """Five annotators on real MNIST (three reliable, a spammer, an inverted one): the learned
    rates land near the truth, and eval flags the spammer and the inverted annotator."""
    crowd = [("r1", 0.05), ("r2", 0.05), ("r3", 0.05), ("spam", 0.5), ("inv", 0.9)]
    _crowd(tmp_path / "crowd.csv", mnist.train.labels[:3000], 6000, crowd)
    out = tmp_path / "run"
    assert main(["train", "weak", "--pairs", str(tmp_path / "crowd.csv"), "--annotator-model", "flip", "--test-subset", "1000", "--train-subset",
                 "3000", "--val-subset", "1000", "--val-pairs", "2000", "--samples", "24k", "--eval-every", "24k",
                 "--quiet", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    rates = {k: v["flip_rate"] for k, v in ev["annotators"].items()}
    assert all(abs(rates[k] - e) < 0.1 for k, e in crowd), rates  # measured within 0.03 at 30k samples
    assert ev["annotators"]["spam"]["flag"] == "spammer" and ev["annotators"]["inv"]["flag"] == "inverted"
    assert ev["annotators"]["r1"]["n"] == 1200 and ev["relational_accuracy"] > 0.85
    printed = capsys.readouterr().out
    assert "annotator inv: learned flip rate" in printed and "inverted: outcomes used inverted" in printed
    # the checkpoint holds the rates' logits, so a resumed run continues from the learned rates
    pointer = json.loads((out / "checkpoint.json").read_text())
    saved = torch.load(out / pointer["state"], weights_only=True)["state"]["annotator_logits"]
    names = sorted(rates)
    assert [1 / (1 + math.exp(-t)) for t in saved] == pytest.approx([rates[k] for k in names], abs=2e-3)


def test_flip_model_needs_annotators(data_dir, tmp_path, capsys):
    path = tmp_path / "plain.csv"
    path.write_text("a,b,outcome\n0,1,1\n2,3,0\n4,5,1\n")
    rc = main(["train", "weak", "--pairs", str(path), "--annotator-model", "flip", "--train-subset", "100", "--test-subset", "1000",
               "--val-subset", "100", "--val-pairs", "100", "--samples", "10", "--quiet", "--data-dir", str(data_dir),
               "--out", str(tmp_path / "r")])
    assert rc == 2 and "needs comparisons with an annotator column" in capsys.readouterr().err
    rc = main(["train", "weak", "--pairs", "1k", "--annotator-model", "flip", "--noise-correction", "estimate",
               "--out", str(tmp_path / "r2"), "--quiet"])
    assert rc == 2 and "instead of --noise-correction" in capsys.readouterr().err
