"""The loss study end to end on its smoke profile (real MNIST, tiny budgets) and its README block."""
from __future__ import annotations

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
