"""``relcomp bench --compare`` (#31): two bench results side by side, each figure's change beside
the machine's own speed, brute-forced on the committed results file scaled by hand."""
from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from relcomp.cli import main
from relcomp.errors import DataError
from relcomp.lab.bench_compare import apart, compare, read_bench, speed
from relcomp.lab.report import render

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench.json"


def scaled(r: dict, machine: float, relcomp: float = 1.0) -> dict:
    """``r`` on a machine ``machine`` times as fast for bf16 (fp32 as fast as before), and a
    relcomp whose bf16 training is ``relcomp`` times as fast."""
    s = copy.deepcopy(r)
    s["matmul_gflops_bf16"] *= machine
    s["peak_gflops_samples"]["bf16"] = [x * machine for x in s["peak_gflops_samples"]["bf16"]]
    for probe in s["speed_probes"]:
        probe["bf16"] *= machine
    for paths in [*s["pairs_per_s"].values(), *s["ablations"].values()]:
        for path in paths:
            if path not in ("naive", "gather_fp32") and paths[path]:
                paths[path] *= machine * relcomp
    for key in ("time_to_98_weak", "time_to_97_siamese_1shot"):
        for k in ("time_s", "train_time_s"):
            if s[key].get(k):
                s[key][k] /= machine * relcomp
    s["suggest_1000_s"] /= machine * relcomp
    return s


def test_a_figure_that_moved_with_the_machine_is_told_from_one_that_moved_on_its_own():
    r = read_bench(COMMITTED)
    faster_vm = compare(r, scaled(r, 1.25))
    rows = {row["figure"]: row for row in faster_vm["rows"]}
    assert faster_vm["moved"] == []
    assert rows["weak fast (pairs/s)"]["verdict"] == "with the machine"
    assert rows["weak fast (pairs/s)"]["machine"] == pytest.approx(0.25, abs=1e-3)
    assert rows["weak fast (pairs/s)"]["apart"] == pytest.approx(apart(1, 1.25), abs=1e-3)
    assert rows["weak fast (pairs/s)"]["apart_at_equal_speed"] == pytest.approx(0, abs=1e-3)
    assert rows["weak naive (pairs/s)"]["verdict"] == "agree"  # fp32: the machine did not move for it
    assert rows["matmul peak bf16 (GFLOP/s)"]["verdict"] == "the machine"
    # the same machine, a relcomp 20% slower on its bf16 paths: every one of them moved
    slower = compare(r, scaled(r, 1.0, relcomp=0.8))
    assert "weak fast (pairs/s)" in slower["moved"] and "weak to 98% val (s)" in slower["moved"]
    assert not any("naive (pairs/s)" in name for name in slower["moved"])


def test_the_machine_speed_is_the_median_probe_of_the_figures_phase():
    r = {"speed_probes": [{"phase": "start", "bf16": 100.0}, {"phase": "throughput:weak", "bf16": 200.0},
                          {"phase": "throughput:weak", "bf16": 300.0}, {"phase": "throughput:weak", "bf16": 1000.0},
                          {"phase": "throughput:siamese", "bf16": 50.0}]}
    assert speed(r, "bf16", "throughput:weak") == 300.0
    assert speed(r, "bf16", "throughput:siamese") == 50.0
    assert speed(r, "bf16", "start") == 100.0
    assert speed(r, "bf16", "time_to_accuracy") == 200.0  # no sample of that phase: all of them
    assert speed(r, "fp32", "start") is None
    # a file from before the per-model phases: its throughput samples stand for both models
    old = {"speed_probes": [{"phase": "throughput", "bf16": 10.0}, {"phase": "throughput", "bf16": 30.0},
                            {"phase": "start", "bf16": 1.0}]}
    assert speed(old, "bf16", "throughput:weak") == 20.0


def test_bench_compare_cli_exits_1_when_a_figure_moved_and_writes_its_block(tmp_path):
    r = read_bench(COMMITTED)
    for name, s in (("same.json", scaled(r, 1.2)), ("slow.json", scaled(r, 1.0, relcomp=0.7))):
        (tmp_path / name).write_text(json.dumps(s))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["bench", "--compare", str(COMMITTED), str(tmp_path / "same.json")]) == 0
    assert "none more than 10% apart at equal machine speed" in out.getvalue()
    with redirect_stdout(io.StringIO()):
        assert main(["bench", "--compare", str(COMMITTED), str(tmp_path / "slow.json")]) == 1
    out = io.StringIO()
    with redirect_stdout(out):
        main(["bench", "--compare", str(COMMITTED), str(tmp_path / "slow.json"), "--json"])
    (tmp_path / "c.json").write_text(out.getvalue())
    assert "weak fast (pairs/s)" in render(tmp_path / "c.json")


@pytest.mark.parametrize("content, says", [
    ("not json", "not a readable bench results file"),
    ('{"kind": "reproduce"}', "not the results of relcomp bench"),
    ('{"kind": "bench"}', "without pairs_per_s"),
    ("malformed", "a malformed bench results file"),
])
def test_a_bad_bench_file_is_one_line_and_exit_2(tmp_path, content, says):
    path = tmp_path / "bad.json"
    if content == "malformed":
        r = read_bench(COMMITTED)
        r["pairs_per_s"] = {"weak": 3}
        content = json.dumps(r)
    path.write_text(content)
    with pytest.raises(DataError, match=says):
        read_bench(path)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["bench", "--compare", str(path), str(COMMITTED)]) == 2
    assert len(err.getvalue().strip().splitlines()) == 1 and says in err.getvalue()


def test_a_quick_bench_does_not_compare_with_a_full_one():
    r = read_bench(COMMITTED)
    with pytest.raises(DataError, match="--quick"):
        compare(r, dict(r, quick=True))


def test_a_quick_bench_is_refused_before_it_runs_against_a_full_file():
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert main(["bench", "--quick", "--compare", str(COMMITTED)]) == 2  # at once: no bench ran
    assert "leave out --quick" in err.getvalue()


def test_benches_in_two_precisions_say_so():
    r = read_bench(COMMITTED)
    fp32 = dict(copy.deepcopy(r), precision="fp32", matmul_gflops_bf16=None)
    c = compare(r, fp32)
    assert c["notes"] and "bf16 and fp32" in c["notes"][0]
    assert compare(r, r)["notes"] == []


def test_a_target_reached_in_one_bench_only_is_a_note_not_a_row():
    r = read_bench(COMMITTED)
    reached = copy.deepcopy(r)
    reached["time_to_97_siamese_1shot"].update(reached=True, time_s=90.0)
    c = compare(r, reached)
    assert not any(row["figure"].startswith("Siamese to 97%") for row in c["rows"])
    assert any("time_to_97_siamese_1shot: reached its target in the new bench only" in n for n in c["notes"])
