"""Fewer comparisons: the class-balance term on unlabeled images, augmentation, `relcomp suggest`
and annotation rounds (`--pairs FILE`, `--init-from`)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from relcomp.augment import AUGMENTS, augment
from relcomp.cli import main
from relcomp.losses import balance_loss


def test_balance_loss_brute_force():
    logits = torch.randn(7, 4)
    p = logits.softmax(-1).mean(0)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    want = sum(float(p[k]) * math.log(float(p[k]) / float(prior[k])) for k in range(4))
    assert abs(float(balance_loss(logits, prior)) - want) < 1e-6
    entropy = -sum(float(p[k]) * math.log(float(p[k])) for k in range(4))
    assert abs(float(balance_loss(logits)) - (math.log(4) - entropy)) < 1e-6


def test_balance_loss_zero_gradient_where_balanced():
    """Perfectly balanced, confident predictions (each class once): the term is 0 and so is its
    gradient; a collapsed batch (every item one class) is pushed apart."""
    balanced = (torch.eye(5) * 20).requires_grad_()
    loss = balance_loss(balanced)
    loss.backward()
    assert loss.item() < 1e-6 and balanced.grad.abs().max() < 1e-6
    collapsed = torch.zeros(5, 5)
    collapsed[:, 2] = 3.0
    collapsed.requires_grad_()
    loss = balance_loss(collapsed)
    loss.backward()
    assert loss.item() > 0.5 and collapsed.grad[:, 2].min() > 0  # lowering class 2 lowers the loss


def test_augment_shapes_and_determinism():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    assert augment(x, "off") is x
    for kind in AUGMENTS[1:]:
        torch.manual_seed(0)
        a = augment(x, kind)
        torch.manual_seed(0)
        assert torch.equal(a, augment(x, kind)) and a.shape == x.shape
        assert not torch.equal(a, x) and abs(float(a.sum() / x.sum()) - 1) < 0.25  # moved, not lost


def _write_pairs(path, labels, n, seed, exclude=()):
    rng = np.random.default_rng(seed)
    rows, seen = [], set(exclude)
    while len(rows) < n:
        i, j = (int(v) for v in rng.integers(0, len(labels), 2))
        if labels[i] == labels[j] or (min(i, j), max(i, j)) in seen:
            continue
        seen.add((min(i, j), max(i, j)))
        rows.append((i, j, int(labels[i] > labels[j])))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "outcome"])
        w.writerows(rows)
    return seen


def _oracle(suggested, labels, out):
    """A simulated annotator: judges suggested pairs from the hidden labels (ties are not asked)."""
    rows = [r for r in csv.DictReader(open(suggested))]
    judged = [(r["a"], r["b"], int(labels[int(r["a"])] > labels[int(r["b"])])) for r in rows
              if labels[int(r["a"])] != labels[int(r["b"])]]
    with open(out, "a", newline="") as f:
        csv.writer(f).writerows(judged)
    return len(judged)


@pytest.mark.mnist
@pytest.mark.slow
def test_annotation_round_on_mnist(mnist, data_dir, tmp_path, capsys):
    """Round 1 on 500 random judged pairs, `suggest` 300 more (never a judged pair, named by
    train-split index), an oracle judges them, round 2 starts from round 1's weights."""
    labels = mnist.train.labels[:3000]
    comps = tmp_path / "judged.csv"
    judged = _write_pairs(comps, labels, 500, 0)
    common = ["--train-subset", "3000", "--test-subset", "1000", "--val-subset", "500", "--val-pairs", "2000", "--data-dir", str(data_dir),
              "--quiet", "--eval-every", "4000"]
    r1 = tmp_path / "round1"
    assert main(["train", "weak", "--pairs", str(comps), "--samples", "8k", "--out", str(r1), *common]) == 0
    ev1 = json.loads((r1 / "eval.json").read_text())
    assert (r1 / "config.json").exists() and ev1["relational_accuracy"] > 0.7, ev1
    for strategy in ("uncertainty", "boundary", "random"):
        out = tmp_path / f"{strategy}.csv"
        assert main(["suggest", str(r1), "--n", "300", "--strategy", strategy, "--out", str(out)]) == 0
        rows = list(csv.DictReader(open(out)))
        keys = {(min(int(r["a"]), int(r["b"])), max(int(r["a"]), int(r["b"]))) for r in rows}
        assert len(rows) == 300 == len(keys) and not keys & judged, strategy
        assert all(0 <= int(r["a"]) < 3000 and r["a"] != r["b"] for r in rows)
        counts = np.bincount([int(r[c]) for r in rows for c in "ab"])
        assert counts.max() <= 2  # --max-per-item
    assert _oracle(tmp_path / "uncertainty.csv", labels, comps) > 150
    r2 = tmp_path / "round2"
    assert main(["train", "weak", "--pairs", str(comps), "--samples", "4k", "--init-from", str(r1),
                 "--out", str(r2), *common]) == 0
    cfg = json.loads((r2 / "config.json").read_text())
    assert cfg["init_from"] == str(r1.resolve())
    first = json.loads((r2 / "metrics.jsonl").read_text().splitlines()[0])
    # started from round 1's weights: its first evaluation is at least as good as round 1 began
    assert first["val_rel_acc"] > 0.7, first
    # round 1 learned from the file before the oracle's answers were added: it is not resumed (or
    # reused by a study, whose run names hash the file's name, not what it holds) on the new one
    capsys.readouterr()
    assert main(["train", "--resume", str(r1)]) == 2
    err = capsys.readouterr().err.strip()
    assert "comparisons changed since this run started" in err and len(err.splitlines()) == 1, err


@pytest.mark.mnist
def test_init_from_loads_the_weights(data_dir, tmp_path):
    from relcomp.checkpoint import read_weights
    from relcomp.engine import init_weights
    from relcomp.run import build_run_model, load_config

    run = tmp_path / "a"
    assert main(["train", "ranker", "--pairs", "2000", "--train-subset", "1000", "--test-subset", "1000", "--val-subset", "300",
                 "--val-pairs", "500", "--samples", "512", "--data-dir", str(data_dir), "--quiet", "--no-eval",
                 "--out", str(run)]) == 0
    cfg = load_config(run)
    cfg.init_from = str(run)
    model = build_run_model(cfg)
    init_weights(cfg, model)
    saved, _ = read_weights(run / "best.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    cfg.num_classes, cfg.model = 5, "weak"
    with pytest.raises(Exception, match="it must match the one being trained"):
        init_weights(cfg, build_run_model(cfg))


@pytest.mark.mnist
def test_suggest_and_rounds_bad_input(mnist, data_dir, tmp_path, capsys):
    labels = mnist.train.labels[:1000]
    comps = tmp_path / "judged.csv"
    _write_pairs(comps, labels, 300, 1)
    common = ["--train-subset", "1000", "--test-subset", "1000", "--val-subset", "300", "--val-pairs", "500", "--data-dir", str(data_dir),
              "--quiet", "--no-eval"]
    run = tmp_path / "r"
    assert main(["train", "weak", "--pairs", str(comps), "--samples", "512", "--out", str(run), *common]) == 0
    sup = tmp_path / "sup"
    assert main(["train", "supervised", "--samples", "256", "--out", str(sup), *common]) == 0
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("a,b,outcome\n0,1000,1\n")
    capsys.readouterr()
    cases = [
        (["suggest", str(run), "--n", "5000", "--candidates", "2000"], "is more than the"),
        (["suggest", str(sup), "--n", "10"], "suggest needs a run trained on comparisons"),
        (["suggest", str(run), "--n", "0"], "--n must be positive"),
        (["train", "weak", "--pairs", str(unknown), "--out", str(tmp_path / "x"), *common], "unknown item '1000'"),
        (["train", "weak", "--pairs", str(comps), "--init-from", str(sup), "--out", str(tmp_path / "y"), *common],
         "it must match the one being trained"),
        (["train", "weak", "--class-proportions", "1,2", "--out", str(tmp_path / "z"), *common],
         "--class-proportions needs 10 positive numbers"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_oracle_answers_from_labels():
    from relcomp.lab.studies.active import oracle

    labels = np.array([0, 1, 2, 2])
    a, b = np.array([1, 0, 2, 3]), np.array([0, 1, 3, 1])
    assert oracle(a, b, labels, 0.0, np.random.default_rng(0)).tolist() == [1, 0, 0, 1]  # a tie is a "no"
    flipped = oracle(np.ones(10_000, int), np.zeros(10_000, int), labels, 0.2, np.random.default_rng(0))
    assert 0.18 < 1 - flipped.mean() < 0.22


def test_active_profile_rejects_a_bad_schedule(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "active"\nseeds = [0]\nbudgets = [100]\nschedule = [0.5, 0.25]\nstrategies = ["random"]\n'
                   'unlabeled = ["off"]\n[train]\nfirst_samples = "1k"\nround_samples = "1k"\n')
    assert main(["reproduce", "--profile", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2


def _judged(path):
    return [(int(r["a"]), int(r["b"]), int(r["outcome"])) for r in csv.DictReader(open(path))]


@pytest.mark.mnist
@pytest.mark.slow
def test_active_smoke_profile_end_to_end(mnist, data_dir, tmp_path, capsys):
    """`relcomp reproduce --profile active-smoke`: rounds that reach each budget exactly, never ask a
    judged pair, start every strategy from one shared random quarter, chain their weights, and write
    the table, figure and reports; a rerun retrains nothing."""
    out = tmp_path / "active"
    args = ["reproduce", "--profile", "active-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]
    assert main(args) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "active" and len(r["cells"]) == 2 * 2 * 2 and r["n_runs"] == 2 * (2 + 2 * 2 * 2)
    assert set(r["chosen_on_val"]) == {"200", "400"}
    labels = mnist.train.labels[:2000]
    for key, cell in r["cells"].items():
        budget, unl, strategy = key.split("/")
        assert cell["judged"] == [int(budget)] and cell["test_cls_acc"]["n"] == 1
        rounds = [_judged(out / "pairs" / f"flip0.1-b{budget}-s0-round0.csv")] + [
            _judged(out / "pairs" / f"flip0.1-b{budget}-s0-{unl}-{strategy}-round{k}.csv") for k in (1, 2)]
        assert [len(x) for x in rounds] == [int(budget) // 4, int(budget) // 2, int(budget)]
        assert rounds[1][: len(rounds[0])] == rounds[0] and rounds[2][: len(rounds[1])] == rounds[1]
        keys = {(min(a, b), max(a, b)) for a, b, _ in rounds[2]}
        assert len(keys) == int(budget) and all(a != b for a, b in keys)
        wrong = np.mean([z != int(labels[a] > labels[b]) for a, b, z in rounds[2]])
        assert 0.02 < wrong < 0.25  # the profile's annotator flips 10% of its answers
        final = json.loads((Path(cell["seeds"][0]) / "config.json").read_text())
        prev = json.loads((Path(final["init_from"]) / "config.json").read_text())
        assert final["data"]["pairs"].endswith("round2.csv") and prev["data"]["pairs"].endswith("round1.csv")
        assert Path(prev["init_from"]).name.startswith(f"flip0.1-b{budget}-s0-{unl}-r0")
    assert (out / "figures" / "active.png").stat().st_size > 10_000
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 1
    assert "◆" in (out / "report.md").read_text()
    assert r["command"] == "relcomp reproduce --profile active-smoke" and r["machine"]["cores"] >= 1
    stamps = {p: p.stat().st_mtime for p in (out / "runs").glob("*/best.safetensors")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime for p in (out / "runs").glob("*/best.safetensors")} == stamps
    _check_report_round_trip(out / "results.json", tmp_path, capsys)


def _check_report_round_trip(results, tmp_path, capsys):
    """`relcomp report` prints the study's table from its results file and keeps a README block of
    it up to date; `--check` fails on a block edited by hand."""
    capsys.readouterr()
    assert main(["report", str(results), "--figures", str(tmp_path / "img")]) == 0
    printed = capsys.readouterr().out
    assert "| 200 |" in printed and "◆" in printed and (tmp_path / "img" / "active.png").stat().st_size > 10_000
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n<!-- relcomp report {results.relative_to(tmp_path)} figures=img -->\nold\n"
                      "<!-- end relcomp report -->\ntail\n")
    assert main(["report", "--readme", str(readme), "--check"]) == 1
    assert main(["report", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert printed.split("![")[0].strip() in text and text.endswith("<!-- end relcomp report -->\ntail\n")
    assert main(["report", "--readme", str(readme), "--check"]) == 0
    readme.write_text(text.replace("| 200 |", "| 201 |"))
    assert main(["report", "--readme", str(readme), "--check"]) == 1
    assert main(["report", str(tmp_path / "README.md")]) == 2  # not a results file: one line, exit 2


def test_flip_rate_applies_only_to_active_profiles(tmp_path):
    assert main(["reproduce", "--profile", "smoke", "--flip-rate", "0.1", "--out", str(tmp_path), "--quiet"]) == 2
    assert main(["reproduce", "--profile", "active-smoke", "--flip-rate", "0.6", "--out", str(tmp_path)]) == 2


@pytest.mark.mnist
@pytest.mark.slow
def test_few_smoke_profile_names_clusters_and_asks_about_their_order(data_dir, tmp_path):
    """`relcomp reproduce --profile few-smoke`: the clusters objective and strategy in the rounds
    study, its own figure and targets."""
    out = tmp_path / "few"
    assert main(["reproduce", "--profile", "few-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["cells"]) == {"60/clusters/clusters", "60/clusters/random", "60/balance/random"}  # one skipped
    assert r["n_runs"] == 2 + 2 * 2 + 2 and r["settings"]["targets"]["100"] == 97.0
    assert (out / "figures" / "few.png").stat().st_size > 10_000
    for cell in (r["cells"]["60/clusters/clusters"], r["cells"]["60/clusters/random"]):
        rec = json.loads((Path(cell["seeds"][0]) / "unlabeled.json").read_text())
        assert rec["objective"] == "clusters" and rec["evidence"] > 0
    assert not (Path(r["cells"]["60/balance/random"]["seeds"][0]) / "unlabeled.json").exists()
    rounds = [_judged(out / "pairs" / f"flip0.05-b60-s0-clusters-clusters-round{k}.csv") for k in (1, 2)]
    assert [len(x) for x in rounds] == [36, 60]
    # steps of min(128, pairs) pairs: round 1 its round_steps (10), the last round its last_steps (15)
    samples = [json.loads(next(out.rglob(f"*b60-s0-clusters-clusters-r{k}-*/config.json")).read_text())["samples"]
               for k in (1, 2)]
    assert samples == [10 * 36, 15 * 60]
