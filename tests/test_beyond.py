"""Beyond the paper: the tie and same-class probabilities against brute force, the noise-corrected
loss against its formula, exact flip rates, cut-points on synthetic scores, ordinal anchors,
cluster matching, the ranker, and every option end to end from the CLI and the API."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from relcomp.analysis import match_clusters
from relcomp.config import resolve
from relcomp.data.pairs import flip_outcomes, make_pairs
from relcomp.losses import get_loss, log_prob_relations, pair_predictions, relation_loss
from relcomp.models import build_model
from relcomp.ordinal import anchor_predict, apply_cutpoints, fit_cutpoints


def brute(p_a, p_b):
    """[P(A < B), P(A > B), P(A = B)] by a loop over every (i, j) of every pair."""
    rows = []
    for a, b in zip(p_a, p_b):
        k = len(a)
        lt = sum(a[i] * b[j] for i in range(k) for j in range(k) if i < j)
        gt = sum(a[i] * b[j] for i in range(k) for j in range(k) if i > j)
        eq = sum(a[i] * b[j] for i in range(k) for j in range(k) if i == j)
        rows.append(torch.stack([lt, gt, eq]))
    return torch.stack(rows)


@pytest.mark.parametrize("k", [2, 3, 7, 10])
def test_tie_and_same_probabilities_match_brute_force(k):
    g = torch.Generator().manual_seed(k)
    la, lb = torch.randn(12, k, generator=g, dtype=torch.float64) * 3, torch.randn(12, k, generator=g, dtype=torch.float64) * 3
    p_a, p_b = la.softmax(-1), lb.softmax(-1)
    want = brute(p_a, p_b)
    assert torch.allclose(log_prob_relations(p_a.log(), p_b.log()).exp(), want, atol=1e-10)
    weak_ge = build_model("weak", num_classes=k, relation="ge")
    assert torch.allclose(weak_ge.pair_output(la, lb).exp().double(), want, atol=1e-5)
    weak_same = build_model("weak", num_classes=k, relation="same")
    p_same = torch.sigmoid(get_loss("unconditional", "same").logits(weak_same.pair_output(la, lb))).double()
    assert torch.allclose(p_same, want[:, 2], atol=1e-5)


def test_relation_loss_and_forward_correction_match_formulas():
    torch.manual_seed(0)
    logit, z = torch.randn(8), torch.randint(0, 2, (8,)).float()
    assert torch.allclose(relation_loss(logit, z), F.binary_cross_entropy_with_logits(logit, z))
    e = 0.2
    p = torch.sigmoid(logit)
    p_obs = (1 - e) * p + e * (1 - p)
    want = -(z * p_obs.log() + (1 - z) * (1 - p_obs).log()).mean()
    assert torch.allclose(relation_loss(logit, z, noise=e), want, atol=1e-6)
    logits3, z3 = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert torch.allclose(relation_loss(logits3, z3), F.cross_entropy(logits3, z3), atol=1e-6)
    p3 = logits3.softmax(-1)
    p3_obs = (1 - e) * p3 + e / 2 * (1 - p3)
    assert torch.allclose(p3_obs.sum(-1), torch.ones(8))
    assert torch.allclose(relation_loss(logits3, z3, noise=e), F.nll_loss(p3_obs.log(), z3), atol=1e-6)
    assert pair_predictions(torch.tensor([-1.0, 2.0])).tolist() == [0, 1]
    assert pair_predictions(logits3).tolist() == logits3.argmax(1).tolist()


def test_pair_codes_per_relation():
    labels = np.arange(30) % 5
    ge = make_pairs(labels, 3000, 0, "ge")
    li, lj = labels[ge.i], labels[ge.j]
    assert np.array_equal(ge.z, np.where(li > lj, 1, np.where(li < lj, 0, 2)))
    assert (ge.z == 2).mean() > 0.1 and (ge.i != ge.j).all()
    same = make_pairs(labels, 3000, 0, "same")
    assert np.array_equal(same.z, (labels[same.i] == labels[same.j]).astype(np.uint8))
    gt = make_pairs(labels, 3000, 0, "gt")
    assert (labels[gt.i] != labels[gt.j]).all()


@pytest.mark.parametrize("relation", ["gt", "ge", "same"])
@pytest.mark.parametrize("rate", [0.0, 0.05, 0.3])
def test_flip_rate_is_applied_exactly(relation, rate):
    p = make_pairs(np.arange(40) % 4, 5000, 1, relation)
    f = flip_outcomes(p, rate, seed=3, relation=relation)
    assert int((f.z != p.z).sum()) == round(rate * 5000)
    assert set(np.unique(f.z)) <= ({0, 1, 2} if relation == "ge" else {0, 1})
    assert np.array_equal(f.z, flip_outcomes(p, rate, seed=3, relation=relation).z)


def test_cutpoints_recover_known_thresholds():
    rng = np.random.default_rng(0)
    k_cls, n = 5, 400
    labels = np.repeat(np.arange(k_cls), n)
    scores = labels + rng.uniform(-0.35, 0.35, len(labels))      # true thresholds 0.5, 1.5, ...
    truth = np.arange(k_cls - 1) + 0.5
    shots = np.concatenate([rng.choice(np.flatnonzero(labels == c), 3, replace=False) for c in range(k_cls)])
    for cuts in (fit_cutpoints(scores[shots], k_cls, labels[shots]), fit_cutpoints(scores, k_cls, method="kmeans"),
                 fit_cutpoints(scores, k_cls, method="quantile")):
        assert np.all(np.diff(cuts) > 0) and np.abs(cuts - truth).max() < 0.2, cuts
        assert (apply_cutpoints(scores, cuts) == labels).mean() > 0.97
    assert apply_cutpoints(np.array([-1.0, 0.7, 9.0]), truth).tolist() == [0, 1, 4]
    # unequal known proportions: class c has c + 1 parts
    uneven = np.concatenate([c + rng.uniform(-0.35, 0.35, 100 * (c + 1)) for c in range(k_cls)])
    cuts = fit_cutpoints(uneven, k_cls, method="quantile", proportions=np.arange(1, k_cls + 1))
    assert np.abs(cuts - truth).max() < 0.2, cuts


class _PerfectRelation(torch.nn.Module):
    """Item output = the digit; P(A > B) = sigmoid(20 (a - b)), so P = 1/2 on ties."""

    def pair_output(self, a, b):
        return 20 * (a - b)[:, 0]


def test_ordinal_anchors_with_a_perfect_relation_head():
    y = torch.arange(10).repeat(5).float()[:, None]
    anchors = torch.arange(10).float()[:, None]
    pred = anchor_predict(_PerfectRelation(), y, anchors, np.arange(10), 10)
    assert np.array_equal(pred, y[:, 0].long().numpy())


def test_match_clusters_undoes_a_permutation():
    y = np.arange(100) % 7
    perm = np.random.default_rng(0).permutation(7)
    mapping = match_clusters(perm[y], y, 7)
    assert np.array_equal(mapping[perm[y]], y)


def test_ranker_model():
    torch.manual_seed(0)
    m = build_model("ranker").eval()
    xa, xb = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    assert torch.allclose(m(xa, xb), m.score(xa) - m.score(xb), atol=1e-5)
    ge = build_model("ranker", relation="ge").eval()
    assert torch.allclose(ge(xa, xb).exp().sum(-1), torch.ones(4), atol=1e-5)
    assert build_model("siamese", relation="ge")(xa, xb).shape == (4, 3)


# --- end to end on real MNIST, tiny budgets ---------------------------------------------------

# The ranker's order is asserted, so it gets a real budget; the other runs check options and
# files alone, and a small budget exercises the same code.
BUDGETS = {"real": ["--train-subset", "4000", "--test-subset", "1000", "--val-subset", "1000", "--val-pairs", "2000",
                    "--samples", "3000", "--pairs", "5k"],
           "small": ["--train-subset", "2000", "--test-subset", "500", "--val-subset", "300", "--val-pairs", "600",
                     "--samples", "800", "--pairs", "2k"]}


def _train(tmp_path, data_dir, name, *args, budget="small"):
    from relcomp.cli import main

    out = tmp_path / name
    rc = main(["train", *args, *BUDGETS[budget], "--quiet", "--data-dir", str(data_dir), "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.mnist
@pytest.mark.slow
def test_every_option_from_the_cli(tmp_path, data_dir, capsys):
    from relcomp.cli import main

    ranker = _train(tmp_path, data_dir, "ranker", "ranker", budget="real")
    ev = json.loads((ranker / "eval.json").read_text())
    # the score orders the digits after 3000 pairs (a constant or random score gives rho near 0)
    assert ev["relation"] == "gt" and ev["spearman_rho"] > 0.3 and ev["classification_accuracy"] is None
    assert main(["fewshot", str(ranker), "--shots", "0,1", "--draws", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["method"] == "cutpoints" and set(r["shots"]) == {"0 (kmeans)", "0 (quantile)", "1"}
    assert [(s["k"], s["fit"]) for s in r["shots"].values()] == [(0, "kmeans"), (0, "quantile"), (1, None)]
    assert {p.name for p in ranker.glob("confusion-cutpoints-*")} == {
        "confusion-cutpoints-0-kmeansshot.png", "confusion-cutpoints-0-quantileshot.png", "confusion-cutpoints-1shot.png"}
    assert main(["fewshot", str(ranker), "--shots", "0", "--draws", "1"]) == 0
    assert "0-shot (kmeans): mean" in capsys.readouterr().out
    for relation in ("ge", "same"):
        run = _train(tmp_path, data_dir, f"weak-{relation}", "weak", "--relation", relation)
        ev = json.loads((run / "eval.json").read_text())
        cm = np.array(ev["confusion_matrix"])  # same: classes matched to labels one-to-one first
        assert ev["relation"] == relation and ev["classification_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    # 1 label per class names the classes that `same` found up to a permutation: never better than
    # the best one-to-one matching on the test images themselves
    assert main(["fewshot", str(run), "--method", "names", "--shots", "1", "--draws", "2", "--json"]) == 0
    named = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert named["method"] == "names" and 0 < named["shots"]["1"]["mean"] <= ev["classification_accuracy"] + 1e-9
    siam = _train(tmp_path, data_dir, "siam-noisy", "siamese", "--flip-rate", "0.2", "--noise-correction", "given")
    cfg = json.loads((siam / "config.json").read_text())
    assert cfg["data"]["flip_rate"] == 0.2 and cfg["noise_correction"] == "given"
    assert all(row["noise_rate"] == 0.2 for row in map(json.loads, (siam / "metrics.jsonl").read_text().splitlines()))
    assert main(["fewshot", str(siam), "--method", "anchors", "--shots", "1", "--draws", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["method"] == "anchors"
    assert main(["fewshot", str(siam), "--method", "names"]) == 2
    assert "--method names needs a model that names classes" in capsys.readouterr().err
    est = _train(tmp_path, data_dir, "weak-est", "weak", "--flip-rate", "0.1", "--noise-correction", "estimate")
    rows = [json.loads(x) for x in (est / "metrics.jsonl").read_text().splitlines()]
    assert 0 < rows[-1]["noise_rate"] <= 0.45
    for bad, msg in ((["weak", "--noise-correction", "given"], "give a --flip-rate > 0"),
                     (["weak", "--flip-rate", "0.6"], "--flip-rate must be in [0, 0.5)"),
                     (["weak", "--relation", "ge", "--loss", "paper-code"], "is a likelihood of the gt relation")):
        assert main(["train", *bad, "--quiet", "--out", str(tmp_path / "bad")]) == 2
        assert msg in capsys.readouterr().err


@pytest.mark.mnist
def test_options_from_the_python_api(tmp_path, data_dir, mnist):
    import relcomp

    data = relcomp.MnistSource(pairs="5k", train_subset=3000, val_subset=1000, val_pairs=2000, flip_rate=0.1,
                               data_dir=str(data_dir))
    cfg = relcomp.TrainConfig(model="ranker", relation="ge", noise_correction="given", samples=2000, progress=False,
                              data=data)
    relcomp.train(cfg, tmp_path / "r")
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["noise_rate"] == 0.1 for r in rows)  # the given rate is what the loss corrects for
    assert relcomp.load_config(tmp_path / "r").semantic() == resolve(cfg).cfg.semantic()  # config.json round-trips
    ev = relcomp.evaluate_run(tmp_path / "r")
    # three-way accuracy: uniform guessing gives 1/3; the clean test order is learned well past it
    assert ev["relation"] == "ge" and ev["relational_accuracy"] > 0.5
