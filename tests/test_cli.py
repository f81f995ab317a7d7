"""The CLI: help texts, JSON output schemas and clear errors (one line, exit code 2)."""
import json
import subprocess
import sys

import pytest

from relcomp.cli import main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "relcomp", *args], capture_output=True, text=True, env=env)


def test_help_explains_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("data", "train", "fewshot", "eval", "reproduce"):
        assert cmd in r.stdout
    text = " ".join(run_cli("train", "--help").stdout.split())  # undo argparse's line wrapping
    assert "--samples" in text and "paper-code" in text and "double sigmoid" in text


@pytest.mark.parametrize("args, needle", [
    (["eval", "/nonexistent/run"], "not a relcomp run folder"),
    (["fewshot", "/nonexistent/run"], "not a relcomp run folder"),
    (["train"], "name a model"),
    (["train", "siamese", "--loss", "paper-code", "--samples", "10"], "weak model only"),
    (["reproduce", "--profile", "nope"], "unknown profile"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.startswith("relcomp: error:")


def test_bad_count_is_an_argparse_error():
    r = run_cli("train", "weak", "--samples", "lots")
    assert r.returncode == 2 and "not a count" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_weights_are_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "weak"}))
    (run / "best.safetensors").write_bytes(b"\x00" * 20)
    assert main(["eval", str(run)]) == 2
    assert "not a valid safetensors" in capsys.readouterr().err


def test_fetch_failure_is_a_clear_error(tmp_path):
    import os

    env = dict(os.environ, RELCOMP_DATA_DIR=str(tmp_path))
    r = run_cli("data", "fetch", "--from", str(tmp_path / "empty"), "--no-npm", env=env)
    if r.returncode == 0:  # a public mirror answered: nothing to check here
        pytest.skip("a public mirror was reachable")
    assert r.returncode == 2 and "Supply the files by hand" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.mnist
def test_train_and_eval_json(mnist, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "weak", "--pairs", "3000", "--samples", "1000", "--train-subset", "1000",
                 "--val-subset", "300", "--val-pairs", "500", "--out", str(out), "--quiet", "--no-eval",
                 "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"relational_accuracy", "classification_accuracy", "confusion_matrix"} <= set(r)
    assert 0 <= r["relational_accuracy"] <= 1 and len(r["confusion_matrix"]) == 10
    # resuming a finished run is a no-op that reports the same budget
    assert main(["train", "--resume", str(out), "--quiet", "--no-eval"]) == 0
    assert "1,000 samples" in capsys.readouterr().out
