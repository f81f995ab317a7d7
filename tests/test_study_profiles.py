"""The loss and own-data studies end to end on their smoke profiles (real MNIST, tiny budgets) and
their README blocks."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from relcomp.cli import main

pytestmark = [pytest.mark.mnist, pytest.mark.slow]


def test_loss_smoke_profile(data_dir, tmp_path, capsys):
    out = tmp_path / "loss"
    assert main(["reproduce", "--profile", "loss-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    losses = ["unconditional", "conditional", "symmetric", "paper-code"]
    assert r["kind"] == "loss" and r["n_runs"] == 4 and set(r["cells"]) == set(losses)
    # the default is chosen on val, never on test
    assert r["chosen_on_val"] == max(losses, key=lambda k: r["cells"][k]["val_cls_acc"]["mean"])
    folders = sorted((out / "runs").iterdir())
    assert [json.loads((f / "config.json").read_text())["loss"] for f in folders] == sorted(losses)
    for f in folders:  # each cell is what the run's own eval says
        ev = json.loads((f / "eval.json").read_text())
        loss = json.loads((f / "config.json").read_text())["loss"]
        assert r["cells"][loss]["test_cls_acc"]["values"] == [pytest.approx(100 * ev["classification_accuracy"])]
    assert all(0.0 < c["tie_mass"]["mean"] < 100 for c in r["cells"].values())
    capsys.readouterr()
    assert main(["report", str(out / "results.json")]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| **"))
    assert r["chosen_on_val"] in row and f"{np.mean(r['cells'][r['chosen_on_val']]['test_cls_acc']['values']):.2f}" in row


def test_own_data_smoke_profile(mnist, data_dir, tmp_path, capsys):
    out = tmp_path / "own"
    assert main(["reproduce", "--profile", "own-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "own" and r["n_runs"] == 1 and r["n_labelled_scored"] == 100
    # what a user brings: PNG files, comparisons by file name that agree with the digits, labels
    rows = list(csv.DictReader(open(out / "data" / "comparisons.csv")))
    labels = mnist.train.labels
    assert len(rows) == 2000 and len(list((out / "data" / "images").glob("*.png"))) == 300
    assert all(int(x["outcome"]) == int(labels[int(x["a"][3:8])] > labels[int(x["b"][3:8])]) for x in rows)
    ev = json.loads(next((out / "runs").glob("small-s0-*/eval.json")).read_text())
    cell = r["cells"]["small"]
    assert cell["samples"] == 2000 and cell["cls_acc"]["values"] == [pytest.approx(100 * ev["classification_accuracy"])]
    assert cell["spearman"]["values"] == [pytest.approx(ev["spearman_rho"])]
    capsys.readouterr()
    assert main(["report", str(out / "results.json")]) == 0
    assert f"| small: 2k pairs seen, --unlabeled off | 2,000 | {cell['test_rel_acc']['mean']:.2f} |" in capsys.readouterr().out


def test_loop_smoke_profile(data_dir, tmp_path, capsys):
    """The loop study: the page with --learn in its own process, an oracle through the HTTP API,
    each round scored on held-out test images; rerunning reuses the measured curves."""
    out = tmp_path / "loop"
    assert main(["reproduce", "--profile", "loop-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "loop" and set(r["cells"]) == {"defaults", "features"}
    # the features arm: the page's images as pixel vectors (a file the study writes), an MLP head
    assert (out / "loop" / "features-s0" / "pixels.npz").exists() and len(r["runs"]["features/s0"]["curve"]) == 2
    curve = r["runs"]["defaults/s0"]["curve"]
    assert [c["version"] for c in curve] == [1, 2] and curve[0]["trained_on"] >= 20
    assert all(0 <= c["test_cls_acc"] <= 1 and 0 <= c["page_cls_acc"] <= 1 for c in curve)
    rows = list(csv.DictReader(open(out / "loop" / "defaults-s0" / "judged.csv", newline="")))
    assert len(rows) == 45
    assert r["cells"]["defaults"][0]["test_cls_acc"]["values"] == [pytest.approx(100 * curve[0]["test_cls_acc"])]
    capsys.readouterr()
    assert main(["report", str(out / "results.json"), "--figures", str(tmp_path / "fig")]) == 0
    assert "held-out test classification" in capsys.readouterr().out and (tmp_path / "fig" / "loop.png").exists()
    t = (out / "loop" / "defaults-s0" / "curve.json").stat().st_mtime
    assert main(["reproduce", "--profile", "loop-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    assert (out / "loop" / "defaults-s0" / "curve.json").stat().st_mtime == t  # reused, not measured again
