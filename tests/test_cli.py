"""The CLI: help texts, JSON output schemas and clear errors (one line, exit code 2)."""
import json
import subprocess
import sys

import pytest

from relcomp.cli import main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "relcomp", *args], capture_output=True, text=True, env=env)


def in_process(*args, capsys) -> tuple[int, str, str]:
    """``relcomp ARGS`` in this process (argparse's exits caught): (code, stdout, stderr). The
    real command costs an interpreter and a torch import each time; one test below runs it."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_explains_every_command(capsys):
    code, out, _ = in_process("--help", capsys=capsys)
    assert code == 0
    for cmd in ("data", "train", "fewshot", "eval", "reproduce"):
        assert cmd in out
    text = " ".join(in_process("train", "--help", capsys=capsys)[1].split())  # undo argparse's line wrapping
    assert "--samples" in text and "paper-code" in text and "double sigmoid" in text


def test_help_and_version_answer_without_importing_the_library():
    """`relcomp --help`, `--version`, no command and a typo are answered from the summaries alone
    (measured: 0.02 s against 1.5 s with torch imported); the whole parser lists the same commands,
    in the same order, with the same lines."""
    code = ("import sys\nfrom relcomp.cli import main\nfor argv in (['--help'], ['--version'], [], ['tarin']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
    from relcomp.cli import COMMANDS, build_parser
    from relcomp.cli.parser import SUMMARIES
    from relcomp.models import MODELS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(SUMMARIES) and set(COMMANDS) == set(SUMMARIES)
    assert [a.help for a in sub._choices_actions] == list(SUMMARIES.values())
    assert all(m in SUMMARIES["train"] for m in MODELS)
    # the public API is the same once every module is imported: no submodule shadows a name of it
    import relcomp

    assert all(not isinstance(getattr(relcomp, n), type(relcomp)) for n in relcomp.__all__ if n != "__version__")


def test_suggest_help_says_where_uncertainty_asks_ties(capsys):
    """A ranker's or Siamese model's least sure pairs are often ties on graded items (measured:
    23% of 200 against 10% of random pairs); the help said "not likely ties" for every model."""
    text = " ".join(in_process("suggest", "--help", capsys=capsys)[1].split())
    assert "often ties: train those with --relation ge" in text and "(not likely ties)" not in text


@pytest.mark.parametrize("args, needle", [
    (["eval", "/nonexistent/run"], "not a relcomp run folder"),
    (["fewshot", "/nonexistent/run"], "not a relcomp run folder"),
    (["train"], "name a model"),
    (["train", "siamese", "--loss", "paper-code", "--samples", "10"], "does not apply to the siamese model"),
    (["reproduce", "--profile", "nope"], "unknown profile"),
    (["reproduce", "--profile", "smoke", "--jobs", "0"], "--jobs must be a whole number >= 1"),
    (["reproduce", "--profile", "smoke", "--threads", "-1"], "--threads must be a whole number >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.startswith("relcomp: error:")


@pytest.mark.slow
def test_bad_count_is_an_argparse_error_of_the_real_command():
    r = run_cli("train", "weak", "--samples", "lots")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "not a count" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_weights_are_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "weak"}))
    (run / "best.safetensors").write_bytes(b"\x00" * 20)
    assert main(["eval", str(run)]) == 2
    assert "not a valid safetensors" in capsys.readouterr().err


@pytest.mark.slow
def test_fetch_failure_is_a_clear_error(tmp_path):
    import os

    # a mirror on a closed local port: the fetch must fail, whatever the network allows
    env = dict(os.environ, RELCOMP_DATA_DIR=str(tmp_path), RELCOMP_MNIST_MIRRORS="http://127.0.0.1:9/")
    r = run_cli("data", "fetch", "--from", str(tmp_path / "empty"), "--no-npm", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Supply the files by hand" in r.stderr and "mirror http://127.0.0.1:9/" in r.stderr


@pytest.mark.mnist
def test_train_and_eval_json(mnist, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "weak", "--pairs", "3000", "--samples", "1000", "--train-subset", "1000",
                 "--val-subset", "300", "--val-pairs", "500", "--out", str(out), "--quiet", "--no-eval",
                 "--data-dir", str(data_dir)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads((out / "eval.json").read_text()) and r["n_test_pairs"] == 20_000
    cm = r["confusion_matrix"]
    assert sum(map(sum, cm)) == 10_000
    assert r["classification_accuracy"] == pytest.approx(sum(cm[k][k] for k in range(10)) / 10_000)
    cal = r["calibration"]  # of P(A > B) on the 20k test pairs, with its reliability diagram
    assert cal["n"] == sum(b["n"] for b in cal["bins"]) == 20_000 and cal["of"] == "P(z=1)"
    assert cal["ece"] == pytest.approx(sum(b["n"] / 20_000 * abs(b["observed"] - b["predicted"]) for b in cal["bins"]))
    assert (out / "reliability.png").stat().st_size > 10_000
    # the weak model's items are ordered by their mean P(item > reference): after 1,000 pairs the
    # order already follows the digits
    assert r["kendall_tau"] > 0.3 and r["spearman_rho"] > r["kendall_tau"] and 0.5 < r["ndcg"] <= 1
    # P(A > B) with a 90% MC-dropout interval (the paper's CNN has dropout 0.2)
    from PIL import Image

    for k in (0, 1):
        Image.fromarray(mnist.test.images[k]).save(tmp_path / f"t{k}.png")
    assert main(["compare", str(out), str(tmp_path / "t0.png"), str(tmp_path / "t1.png"), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    lo, hi = c["interval"]
    assert c["samples"] == 100 and c["method"] == "mc-dropout" and 0 <= lo < hi <= 1 and lo - 0.05 < c["p"] < hi + 0.05
    # resuming a finished run is a no-op that reports the same budget
    assert main(["train", "--resume", str(out), "--quiet", "--no-eval"]) == 0
    assert "1,000 samples" in capsys.readouterr().out


# Every bad argument is one line on stderr starting "relcomp", exit code 2, no traceback (the real
# command, as a user types it, in test_bad_count_is_an_argparse_error_of_the_real_command).
@pytest.mark.parametrize("args, needle", [
    (["train", "weak", "--samples", "-5"], "--samples"),
    (["train", "weak", "--samples", "1.5x"], "not a count"),
    (["train", "weak", "--epochs", "1", "--samples", "10"], "not allowed with argument"),
    (["export", "/nonexistent/run", "--format", "banana"], "invalid choice: 'banana'"),
    (["train", "cnn"], "invalid choice: 'cnn'"),
    (["train", "weak", "--relation", "lt"], "invalid choice"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, needle, capsys):
    code, _, err = in_process(*args, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("relcomp") and needle in lines[0] and "--help" in lines[0]


def test_help_shows_defaults_without_clutter(capsys):
    text = " ".join(in_process("train", "--help", capsys=capsys)[1].split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "ranker" in text and "(default: 0.001)" in text
    assert "(default: onnx)" in " ".join(in_process("export", "--help", capsys=capsys)[1].split())
    assert all(name in in_process("train", capsys=capsys)[2] for name in ("supervised", "siamese", "weak", "ranker"))


def test_non_utf8_comparisons_name_the_line(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "c.csv").write_bytes(b"a,b,outcome\n0,1,1\n1,2,1\n2,3,\xff\n")
    assert main(["data", "check", "--images", str(tmp_path / "x.npy"), "--comparisons", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'c.csv'}:4:" in err and "UTF-8" in err and "0xff" in err


@pytest.mark.mnist
def test_ctrl_c_message_is_one_line_of_its_own(data_dir, tmp_path, monkeypatch, capsys):
    import os
    import signal

    from relcomp.callbacks import Callback, default_callbacks

    class CtrlCAtStep3(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 3:
                os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as Ctrl-C sends it

    # the command line takes no callbacks: this one joins the defaults every run gets
    monkeypatch.setattr("relcomp.engine.default_callbacks", lambda: [*default_callbacks(), CtrlCAtStep3()])
    out = tmp_path / "run"
    assert main(["train", "weak", "--pairs", "3000", "--samples", "2000", "--train-subset", "1000", "--test-subset", "1000", "--val-subset",
                 "300", "--val-pairs", "500", "--out", str(out), "--data-dir", str(data_dir)]) == 130
    err = capsys.readouterr().err
    assert err.count("interrupted") == 1
    line = [ln for ln in err.replace("\r", "\n").splitlines() if "interrupted" in ln][0]
    assert line == f"relcomp: interrupted after 384 samples; checkpoint saved. Continue with: relcomp train --resume {out}"


def test_mnist_only_options_with_your_own_data_are_refused(capsys):
    assert main(["train", "siamese", "--images", "x", "--comparisons", "c.csv", "--flip-rate", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--flip-rate apply to MNIST" in err
