"""The objectives on the images nobody compared (``--unlabeled``): brute-force checks of the mutual
information, a clustering that forms on its own, collapse diagnostics, and tiny real rounds on
MNIST, on a folder of your own images and on feature vectors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import relcomp
from conftest import write_user_data
from relcomp.callbacks import WarnCollapse
from relcomp.cli import main
from relcomp.metrics import classes_used, cluster_accuracy
from relcomp.unlabeled import (
    OBJECTIVES,
    IICObjective,
    auto_objective,
    joint_distribution,
    mutual_information,
    nearest_neighbours,
    objective_name,
)


def test_mutual_information_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    joint = torch.rand(5, 5, generator=g)
    joint = (joint + joint.t()) / (2 * joint.sum())
    pi = joint.sum(1)
    brute = sum(float(joint[i, j]) * math.log(float(joint[i, j]) / float(pi[i] * pi[j]))
                for i in range(5) for j in range(5))
    assert float(mutual_information(joint)) == pytest.approx(brute, rel=1e-5)
    # lambda > 1 adds (lambda - 1) times the entropy of each marginal
    entropy = -float((pi * pi.log()).sum())
    assert float(mutual_information(joint, 1.5)) == pytest.approx(brute + entropy, rel=1e-5)
    assert float(mutual_information(torch.eye(4) / 4)) == pytest.approx(math.log(4))  # perfect clusters
    collapsed = torch.zeros(4, 4)
    collapsed[0, 0] = 1.0
    assert float(mutual_information(collapsed)) == pytest.approx(0.0, abs=1e-6)  # one cluster says nothing


def test_joint_distribution_matches_its_definition():
    g = torch.Generator().manual_seed(1)
    p1, p2 = torch.rand(6, 3, generator=g).softmax(1), torch.rand(6, 3, generator=g).softmax(1)
    brute = torch.zeros(3, 3)
    for b in range(6):
        for i in range(3):
            for j in range(3):
                brute[i, j] += (p1[b, i] * p2[b, j] + p1[b, j] * p2[b, i]) / 12
    assert torch.allclose(joint_distribution(p1, p2), brute, atol=1e-6)
    assert float(joint_distribution(p1, p2).sum()) == pytest.approx(1.0)


def test_the_iic_objective_groups_points_by_itself():
    """Four blobs, no label and no comparison: a linear head trained on -I(c; c') between each point
    and one of its nearest neighbours puts each blob in its own class."""
    rng = np.random.default_rng(0)
    centres = np.array([[4, 0], [-4, 0], [0, 4], [0, -4]], float)
    labels = rng.integers(0, 4, 800)
    x = torch.tensor(centres[labels] + rng.normal(0, 0.7, (800, 2)), dtype=torch.float32)
    nb = nearest_neighbours(x, k=5)
    assert (labels[nb.numpy()] == labels[:, None]).mean() > 0.95  # neighbours share their blob
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    objective = IICObjective()
    for _ in range(300):
        rows = torch.randint(800, (128,))
        second = nb[rows, torch.randint(5, (128,))]
        loss = objective([head(x[rows]), head(x[second])], rows)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = head(x).argmax(1).numpy()
    assert classes_used(pred, 4) == 4 and cluster_accuracy(pred, labels, 4) > 0.95


def test_registry_and_names():
    assert objective_name("auto") == next(iter(OBJECTIVES)) == "balance"  # knowing nothing of the data
    assert objective_name("off") is None and OBJECTIVES["iic"].views == 2
    assert classes_used(np.zeros(100, int), 10) == 1 and classes_used(np.arange(100) % 10, 10) == 10


def test_auto_groups_many_images_with_few_comparisons_where_measured():
    # Every side of both lines, and only on data whose grouping was measured (MNIST's pixels).
    for images, comparisons, want in ((50_000, 100, "clusters"), (20_000, 9_999, "clusters"),
                                      (19_999, 100, "balance"), (50_000, 10_000, "balance"), (5_000, 1_000, "balance")):
        assert auto_objective(images, comparisons, True) == want
        assert objective_name("auto", images, comparisons, True) == want
        assert auto_objective(images, comparisons, False) == "balance"
    assert objective_name("clusters", 10, 10, False) == "clusters" and objective_name("off", 50_000, 1, True) is None
    assert relcomp.MnistSource().groups_measured
    assert not relcomp.MnistSource(features="f.npz").groups_measured
    assert not relcomp.MnistSource(encoder="hf:x").groups_measured
    assert not relcomp.UserSource(images="i", comparisons="c").groups_measured


def test_a_collapse_is_said_once(capsys):
    class Info:
        main = True

    class Cfg:
        num_classes = 10

    class FakeTrainer:
        info, cfg = Info(), Cfg()

    warn = WarnCollapse()
    warn.on_eval(FakeTrainer(), {"samples": 500, "val_classes_used": 9})
    assert capsys.readouterr().err == ""
    for _ in range(2):
        warn.on_eval(FakeTrainer(), {"samples": 1000, "val_classes_used": 1})
    err = capsys.readouterr().err
    assert err.count("predicts only 1 of its 10 classes") == 1


TINY = ["--samples", "600", "--eval-every", "300", "--unlabeled-batch", "32", "--quiet"]


@pytest.mark.mnist
@pytest.mark.slow
def test_iic_round_on_mnist_and_a_collapse_in_eval(data_dir, tmp_path, capsys):
    run = tmp_path / "weak"
    assert main(["train", "weak", "--pairs", "100", "--unlabeled", "iic", "--train-subset", "2000", "--test-subset", "1000",
                 "--val-subset", "300", "--val-pairs", "500", "--data-dir", str(data_dir), *TINY,
                 "--out", str(run)]) == 0
    ev = json.loads((run / "eval.json").read_text())
    assert 0 < ev["cluster_accuracy"] <= 1 and 1 <= ev["classes_used"] <= 10 and ev["num_classes"] == 10
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_classes_used" in r for r in rows)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["unlabeled"] == "iic"
    # a model whose classes collapsed into one says so in `relcomp eval`
    weights = load_file(run / "best.safetensors")
    bias = [k for k in weights if k.endswith("bias")][-1]
    weights[bias] = torch.full_like(weights[bias], -1e4)
    weights[bias][3] = 1e4
    from safetensors import safe_open

    with safe_open(run / "best.safetensors", "pt") as f:
        meta = f.metadata()
    save_file(weights, run / "best.safetensors", metadata=meta)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "predicts only 1 of its 10 classes" in out and "clustering accuracy" in out


def own_and_feature_runs(mnist, tmp_path, objective: str, n: int = 300) -> tuple:
    """Runs of ``--unlabeled objective`` on a folder of 300 images and on their pixels as features."""
    from relcomp.data.features import save_features

    imgs = write_user_data(tmp_path / "own", mnist.test.images[:n], mnist.test.labels[:n], 200, n_labelled=n)
    own = tmp_path / "own-run"
    assert main(["train", "weak", "--images", str(imgs["images"]), "--comparisons", str(imgs["comparisons"]),
                 "--labels", str(imgs["labels"]), "--unlabeled", objective, *TINY, "--out", str(own)]) == 0
    npy = write_user_data(tmp_path / "feat", mnist.test.images[:n], mnist.test.labels[:n], 200, n_labelled=n,
                          fmt="npy")
    feats = tmp_path / "features.npz"
    save_features(feats, [str(k) for k in range(n)], mnist.test.images[:n].reshape(n, -1) / 255.0)
    feat = tmp_path / "feat-run"
    assert main(["train", "weak", "--features", str(feats), "--comparisons", str(npy["comparisons"]),
                 "--labels", str(npy["labels"]), "--unlabeled", objective, *TINY, "--out", str(feat)]) == 0
    return own, feat


@pytest.mark.slow
def test_iic_round_on_your_images_and_on_features(mnist, tmp_path):
    own, feat = own_and_feature_runs(mnist, tmp_path, "iic")
    assert "cluster_accuracy" in json.loads((own / "eval.json").read_text())
    ev = json.loads((feat / "eval.json").read_text())
    assert "cluster_accuracy" in ev and ev["classes_used"] >= 1


@pytest.mark.slow
def test_clusters_round_on_your_images_and_on_features(mnist, tmp_path):
    own, feat = own_and_feature_runs(mnist, tmp_path, "clusters")
    for run in (own, feat):
        rec = json.loads((run / "unlabeled.json").read_text())
        assert sum(rec["sizes"]) == 300 and rec["group_accuracy"] > 0.5
    assert main(["suggest", str(own), "--n", "10", "--strategy", "clusters"]) == 0


def test_bad_requests_are_one_line(tmp_path, mnist, capsys):
    assert main(["train", "siamese", "--unlabeled", "iic", "--quiet", "--out", str(tmp_path / "s")]) == 2
    assert "needs a model that names classes" in capsys.readouterr().err
    imgs = write_user_data(tmp_path / "few", mnist.test.images[:20], mnist.test.labels[:20], 30)
    assert main(["train", "weak", "--images", str(imgs["images"]), "--comparisons", str(imgs["comparisons"]),
                 "--classes", "50", "--unlabeled", "iic", "--quiet", "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "only 20 of them" in err and "Traceback" not in err


@pytest.mark.mnist
@pytest.mark.slow
def test_clusters_round_on_mnist_then_the_clusters_questions(data_dir, tmp_path, capsys):
    """Train on 60 comparisons with the images grouped and the groups named, then `relcomp suggest`
    (auto: the clusters strategy) asks about the order of the named classes."""
    run = tmp_path / "weak"
    assert main(["train", "weak", "--pairs", "60", "--unlabeled", "clusters", "--train-subset", "2000", "--test-subset", "1000",
                 "--val-subset", "300", "--val-pairs", "500", "--data-dir", str(data_dir), *TINY,
                 "--samples", "3000", "--eval-every", "1500", "--out", str(run)]) == 0
    rec = json.loads((run / "unlabeled.json").read_text())
    assert rec["objective"] == "clusters" and sum(rec["sizes"]) == 2000
    assert json.loads((run / "config.json").read_text())["resolved"]["unlabeled"] == "clusters"
    assert sorted(rec["class_of_group"]) == list(range(10)) and rec["evidence"] > 0 and 0 < rec["agreement"] <= 1
    assert rec["labelled_items"] == 2000 and rec["group_accuracy"] > 0.6  # groups form without a label (70% of 2,000)
    assert 0 <= rec["named_accuracy"] <= rec["group_accuracy"] + 1e-9
    capsys.readouterr()
    ask = tmp_path / "ask.csv"
    assert main(["suggest", str(run), "--n", "40", "--out", str(ask)]) == 0
    out = capsys.readouterr().out
    assert "clusters:" in out and "on the order of the classes" in out
    rows = ask.read_text().splitlines()[1:]
    pairs = {tuple(sorted(map(int, r.split(",")[:2]))) for r in rows}
    assert len(rows) == len(pairs) == 40 and all(0 <= i < 2000 for p in pairs for i in p)
    scores = [float(r.split(",")[2]) for r in rows]
    assert scores[0] > 1 and scores == sorted(scores, reverse=True)  # order questions first, then boundary
    # answered (truly), those pairs count as judged: none asked again, and the order questions they
    # answered are not asked again either (the page's queue refilled, a study's batches)
    from relcomp.data import load_mnist
    from relcomp.suggest import Suggester, order_needs
    labels = load_mnist(data_dir).train.labels
    judged = tmp_path / "judged.csv"
    rows = [r.split(",")[:2] for r in rows]
    answered = [f"{a},{b},{int(labels[int(a)] > labels[int(b)])}" for a, b in rows]
    judged.write_text("a,b,outcome\n" + "\n".join(answered) + "\n")
    s = Suggester(run, "cpu")
    a, b, score, strategy = s.ask(40, judged=s.read_judged(judged))
    again = {tuple(sorted(p)) for p in zip(a.tolist(), b.tolist(), strict=True)}
    assert strategy == "clusters" and not again & pairs
    need = order_needs(s.outs.argmax(-1).numpy(), s.read_judged(judged), 10).sum()
    assert 0 < (score > 1).sum() <= min(40, need)  # as many order questions as these answers leave needed


def test_the_clusters_strategy_needs_a_model_that_names_classes(tmp_path, mnist, capsys):
    imgs = write_user_data(tmp_path / "r", mnist.test.images[:40], mnist.test.labels[:40], 60)
    run = tmp_path / "ranker"
    assert main(["train", "ranker", "--images", str(imgs["images"]), "--comparisons", str(imgs["comparisons"]),
                 "--samples", "64", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["suggest", str(run), "--n", "5", "--strategy", "clusters"]) == 2
    err = capsys.readouterr().err
    assert "names none" in err and "Traceback" not in err
    assert main(["suggest", str(run), "--n", "5"]) == 0  # auto: random for a ranker with few comparisons
    assert "(random;" in capsys.readouterr().out
