"""The crowd and ties studies end to end on their smoke profiles (real MNIST, tiny budgets), and
their README blocks through `relcomp report`."""
from __future__ import annotations

import csv
import json

import pytest

from relcomp.cli import main

pytestmark = [pytest.mark.mnist, pytest.mark.slow]


def test_crowd_smoke_profile(mnist, data_dir, tmp_path, capsys):
    out = tmp_path / "crowd"
    assert main(["reproduce", "--profile", "crowd-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "crowd" and r["n_runs"] == 3 and set(r["cells"]) == {"clean", "crowd", "modelled"}
    rows = list(csv.DictReader(open(out / "pairs" / "crowd.csv")))
    clean = list(csv.DictReader(open(out / "pairs" / "clean.csv")))
    labels = mnist.train.labels[:2000]
    assert len(rows) == 2000 and [(c["a"], c["b"]) for c in clean] == [(x["a"], x["b"]) for x in rows]
    assert all(int(c["outcome"]) == int(labels[int(c["a"])] > labels[int(c["b"])]) for c in clean)
    flipped = {n: sum(x["outcome"] != c["outcome"] for x, c in zip(rows, clean) if x["annotator"] == n)
               / sum(x["annotator"] == n for x in rows) for n in ("good", "spammer", "inverted")}
    assert flipped == pytest.approx(r["realised_flip_share"]) and flipped["inverted"] > 0.8 > 0.2 > flipped["good"]
    assert set(r["learned"]) == {"good", "spammer", "inverted"} and r["learned"]["good"]["n"] == 1
    for name in ("crowd-rates.png", "crowd-reliability-crowd.png", "crowd-reliability-modelled.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
    capsys.readouterr()
    assert main(["report", str(out / "results.json")]) == 0
    printed = capsys.readouterr().out
    assert "crowd, --annotator-model flip" in printed and "| inverted | 0.90 |" in printed


def test_ties_smoke_profile(data_dir, tmp_path, capsys):
    out = tmp_path / "ties"
    assert main(["reproduce", "--profile", "ties-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "ties" and r["n_runs"] == 2 and r["cells"]["user"]["test_rel_acc"]["n"] == 1
    rows = list(csv.DictReader(open(out / "data" / "ge.csv")))
    assert len(rows) == round(2000 / 0.9) and {x["outcome"] for x in rows} == {"<", ">", "="}
    user_run = next((out / "runs").glob("user-*"))
    cfg = json.loads((user_run / "config.json").read_text())
    assert cfg["relation"] == "ge" and cfg["data"]["source"] == "user"
    report = json.loads((user_run / "validation.json").read_text())
    assert report["stats"]["ties"] == sum(x["outcome"] == "=" for x in rows) > 0
    capsys.readouterr()
    assert main(["report", str(out / "results.json")]) == 0
    assert "three-way test accuracy" in capsys.readouterr().out


def test_bradley_terry_smoke_profile(data_dir, tmp_path, capsys):
    pytest.importorskip("choix")
    out = tmp_path / "bt"
    assert main(["reproduce", "--profile", "bt-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "bt" and r["n_runs"] == 1 and 0 < r["n_compared_items"] <= 600
    assert set(r["cells"]) == {"relcomp", "relcomp, never compared", "choix"}
    rows = list(csv.DictReader(open(out / "pairs" / "s0.csv")))
    assert len(rows) == 1000 and all(int(x["a"]) < 600 and int(x["b"]) < 600 for x in rows)
    # choix ranks the compared items from 1,000 comparisons: clearly better than chance
    assert r["cells"]["choix"]["kendall_tau"]["mean"] > 30
    capsys.readouterr()
    assert main(["report", str(out / "results.json")]) == 0
    assert "choix Bradley-Terry" in capsys.readouterr().out
