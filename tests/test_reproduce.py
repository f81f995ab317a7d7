"""The reproduction on the smoke profile, end to end on real MNIST, and its cache."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from relcomp.errors import ConfigError
from relcomp.lab.report import render
from relcomp.lab.reproduce import format_console, load_profile, profile_names, reproduce
from relcomp.lab.studies.paper import plan

pytestmark = [pytest.mark.mnist, pytest.mark.slow, pytest.mark.xdist_group("smoke-reproduction")]  # one module fixture


@pytest.fixture(scope="module")
def smoke(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    results = reproduce("smoke", out, seeds=1, data_dir=str(data_dir), progress=False)
    return out, results


def test_profiles_exist_and_plan_every_row():
    assert {"paper", "quick", "smoke"} <= set(profile_names())
    paper = load_profile("paper")
    assert paper["supervised"]["epochs"] == 100 and paper["relational"]["samples"] == 5_000_000
    specs = plan(paper, seeds=[0, 1])
    assert len(specs) == 2 * (1 + 3 * 3)
    # the paper's control: every relational run sees the same number of pairs
    assert {s.cfg.samples for s in specs if s.group != "supervised"} == {5_000_000}
    with pytest.raises(ConfigError):
        load_profile("nope")


def test_seeds_flag_reaches_every_study_kind(monkeypatch, data_dir, tmp_path):
    """`--seeds N` sets seeds 0 .. N-1 for the profile kinds with their own runner (not only the
    paper's and the active study), and the command recorded says so."""
    from types import SimpleNamespace

    from relcomp.lab.studies import STUDIES

    seen = {}
    for kind in ("beyond", "loss", "crowd", "active"):  # each study stands in by a run that records its profile
        monkeypatch.setitem(STUDIES, kind, SimpleNamespace(run=lambda prof, *a, **k: seen.setdefault(prof["kind"], prof)))
    for name in ("beyond-smoke", "loss-smoke", "crowd-smoke", "active-smoke"):
        reproduce(name, tmp_path, seeds=2, data_dir=str(data_dir), progress=False)
    assert {k: p["seeds"] for k, p in seen.items()} == {k: [0, 1] for k in ("beyond", "loss", "crowd", "active")}
    assert seen["beyond"]["command"] == "relcomp reproduce --profile beyond-smoke --seeds 2"


def test_results_schema_and_files(smoke):
    out, r = smoke
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["profile"] == "smoke" and on_disk["tables"] == json.loads(json.dumps(r["tables"]))
    t = r["tables"]
    assert len(t["table1"]) == 3 and len(t["table2"]) == 3 and len(t["table3"]) == 1 + 3 * 2 + 3

    def check(cell, paper_expected):
        assert set(cell) >= {"mean", "std", "n", "paper"} and cell["n"] == len(cell["values"]) >= 1
        assert cell["mean"] == pytest.approx(np.mean(cell["values"]))
        # the paper's number only beside a run of a size the paper trained (smoke: 1k and 20k, none)
        assert (cell["paper"] is not None) == paper_expected, cell

    for row in t["table1"]:
        check(row["relcomp"], False)
    for row in t["table2"]:
        check(row["paper-code"], False)
        check(row["symmetric"], False)
    for row in t["table3"]:
        if "relcomp" in row:
            check(row["relcomp"], row["row"] == "Supervised")
        else:
            check(row["paper-code"], False)
            check(row["symmetric"], False)
    siamese_rows = [row for row in t["table3"] if row["row"].startswith("Siamese")]
    assert all(row["relcomp"]["n"] == 3 for row in siamese_rows)  # one value per few-shot draw
    assert set(r["ordinal"]) >= {"supervised", "siamese-20k", "weak-20k-symmetric", "weak-20k-paper-code"}
    for key, o in r["ordinal"].items():
        assert o["rho"]["n"] == 1 and 0 <= o["rho"]["mean"] <= 1 and o["rho"]["std"] == 0
        assert sorted(o["ordering"].split("→")) == [str(d) for d in range(10)]
        # the paper's rho was measured on supervised, Siamese-50k and paper-code weak-500k models only
        assert (o["paper_rho"] is not None) == (key == "supervised"), key
    for name in ("fig2_supervised_curves.png", "fig4_confusion_supervised.png", "fig5_confusion_siamese_3shot.png",
                 "fig6_confusion_weak_symmetric.png", "fig7_embeddings.png", "curves_relational.png", "classification.png"):
        assert (out / "figures" / name).stat().st_size > 5000, name
        assert name in r["figures"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(r["figures"]) and "Table 3" in html
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "paper-code" in md and "|rho|" not in md.split("## Ordinal")[0]
    text = format_console(r)
    assert "Table 2" in text and "Weakly supervised (1k)" in text
    # a set larger than the pairs a run sees is not called a larger data condition
    assert "Weakly supervised (20k set, ≤2k distinct seen)" in text
    # the README block of this results file: provenance, the tables, its chart drawn from the numbers
    assert on_disk["kind"] == "paper" and on_disk["command"].startswith("relcomp reproduce --profile smoke")
    block = render(out / "results.json", "img", draw_into=out / "img")
    assert "**Table 3. Classification test accuracy (%)**" in block and "![Table 3 as a chart](img/smoke-classification.png)" in block
    assert (out / "img" / "smoke-classification.png").stat().st_size > 5000
    for row in t["table3"]:  # every cell of the results file is in the block as printed
        cell = row.get("relcomp") or row["symmetric"]
        assert f"{cell['mean']:.2f}" in block


def test_a_run_is_printed_beside_its_committed_reference(smoke, tmp_path):
    """`make demo`'s one seed beside the committed 3-seed file of its profile, in that file's
    standard deviations; nothing beside a file that holds the same numbers."""
    from relcomp.lab.reproduce import beside_reference

    _, r = smoke
    ref = json.loads(json.dumps(r))
    row = ref["tables"]["table3"][0]
    row["relcomp"].update(mean=row["relcomp"]["mean"] - 1.0, std=0.5)
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    text = beside_reference(r, tmp_path / "ref.json")
    assert "Supervised" in text and "+2.0 std" in text
    (tmp_path / "same.json").write_text(json.dumps(r))
    assert beside_reference(r, tmp_path / "same.json") is None


def test_rerun_reuses_finished_runs(smoke, data_dir):
    out, first = smoke
    ckpts = sorted(out.glob("runs/*/ckpt/*.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    t = time.perf_counter()
    again = reproduce("smoke", out, seeds=1, data_dir=str(data_dir), progress=False)
    assert {p: p.stat().st_mtime_ns for p in sorted(out.glob("runs/*/ckpt/*.safetensors"))} == before
    assert again["tables"] == first["tables"]
    assert time.perf_counter() - t < first["wall_time_s"]


def test_device_script_runs_the_study_two_at_once_with_the_same_numbers(smoke, data_dir, tmp_path):
    """`scripts/device-paper.sh` end to end on a CPU with the smoke profile and two jobs (#29): the
    results file, the reports, the figures and a log come back under $OUT, the runs were trained two
    at once, and every cell equals the sequential run's (the module's fixture, one job)."""
    _, sequential = smoke
    out = tmp_path / "out"
    import torch

    # the threads of the fixture's runs: a CPU's float sums move in the last digits with the thread count
    env = {**os.environ, "PROFILE": "smoke", "JOBS": "2", "DEVICE": "cpu", "OUT": str(out), "WORK": str(tmp_path / "work"),
           "PYTHON": sys.executable, "DATA_DIR": str(data_dir), "THREADS": str(torch.get_num_threads())}
    script = Path(__file__).resolve().parents[1] / "scripts" / "device-paper.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = json.loads((out / "smoke-results.json").read_text())
    assert parallel["jobs"] == 2 and sequential["jobs"] == 1
    assert parallel["tables"] == json.loads(json.dumps(sequential["tables"]))
    assert parallel["ordinal"] == json.loads(json.dumps(sequential["ordinal"]))
    for key, run in sequential["runs"].items():
        assert parallel["runs"][key]["eval"] == json.loads(json.dumps(run["eval"])), key
    assert {"smoke-report.md", "smoke-report.html", "smoke-figures", "device-smoke.log"} <= {p.name for p in out.iterdir()}
    log = (out / "device-smoke.log").read_text()
    assert "10 runs trained, 2 at once" in log and "reproduce ended with status 0" in log
    assert len(list((out / "smoke-metrics").glob("*.jsonl"))) == 10


def test_beyond_smoke_profile_end_to_end(data_dir, tmp_path):
    """`relcomp reproduce --profile beyond-smoke`: every study, cell, figure and report file, and
    the README block `relcomp report` makes of its results."""
    from relcomp.cli import main
    from relcomp.lab.report import render

    out = tmp_path / "beyond"
    assert main(["reproduce", "--profile", "beyond-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    r = json.loads((out / "results.json").read_text())
    # relations 3 x 3, noise 2 models x 1 rate x 2 corrections, sizes 2 models x 2 (own budget)
    assert r["kind"] == "beyond" and r["n_runs"] == 9 + 4 + 4 and r["settings"]["seeds"] == [0]
    assert r["command"] == "relcomp reproduce --profile beyond-smoke"
    assert set(r["relations"]) == {f"{m}/{rel}" for m in ("weak", "siamese", "ranker") for rel in ("gt", "ge", "same")}
    assert r["relations"]["weak/gt"]["loss"] == "symmetric" and r["relations"]["weak/ge"]["loss"] == "unconditional"
    assert set(r["ranker"]["cutpoints"]) == {"0 (kmeans)", "0 (quantile)", "1", "3"}
    assert set(r["siamese_k"]["anchors"]) == {"1", "3"}
    assert set(r["noise"]) == {"weak/0/none", "weak/0.2/none", "weak/0.2/given", "siamese/0/none",
                               "siamese/0.2/none", "siamese/0.2/given"}
    # the clean noise cell is the gt run's own number
    assert r["noise"]["weak/0/none"]["accuracy"] == r["relations"]["weak/gt"]["classification_accuracy"]
    assert r["noise"]["siamese/0/none"]["accuracy"] == r["siamese_k"]["linear"]["1"]
    assert len(r["efficiency"]) == 4
    cell = r["efficiency"]["weak/500"]["accuracy"]
    assert cell["n"] == 1 and cell["std"] == 0 and cell["mean"] == pytest.approx(cell["values"][0])
    for name in ("beyond-smoke-noise.png", "beyond-smoke-efficiency.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "2k set, ≤1500 distinct seen" in html and html.count("data:image/png;base64,") == 2
    md = render(out / "results.json")
    assert f"| `gt` (A > B, ties dropped; the paper) | {r['relations']['weak/gt']['relational_accuracy']['mean']:.2f} / " in md
    def outputs():  # what training, evaluation and few-shot write (a wall-time bound would measure the machine)
        return {p: p.stat().st_mtime_ns for pattern in ("*.safetensors", "eval.json", "fewshot*.json", "*.png")
                for p in out.glob(f"runs/*/{pattern}")}

    written = outputs()
    assert main(["reproduce", "--profile", "beyond-smoke", "--out", str(out), "--quiet", "--data-dir", str(data_dir)]) == 0
    assert outputs() == written and len(written) > 17 * 4  # every run reused: nothing trained or evaluated again


def test_a_bad_test_subset_in_a_profile_is_one_line_and_exit_2(data_dir, tmp_path, capsys):
    from importlib import resources

    from relcomp.cli import main

    body = resources.files("relcomp").joinpath("configs", "loss-smoke.toml").read_text()
    assert "test_subset = 1000" in body
    profile = tmp_path / "bad.toml"
    profile.write_text(body.replace("test_subset = 1000", 'test_subset = "many"'))
    assert main(["reproduce", "--profile", str(profile), "--out", str(tmp_path / "o"), "--quiet",
                 "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "--test-subset (a profile's [data] test_subset) must be a positive integer, got 'many'" in err and "Traceback" not in err
