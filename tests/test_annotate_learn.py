"""`relcomp annotate --learn`: a model trained in the background while an oracle judges through the
HTTP API, on a folder of real MNIST PNGs; and what a SIGKILL of the trainer or the server leaves."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from relcomp.annotate.oracle import call, simulate

pytestmark = [pytest.mark.mnist, pytest.mark.slow]


def _mnist_folder(root: Path, mnist, n: int) -> dict[str, int]:
    """The first ``n`` MNIST train images as PNGs; their labels (kept from the server)."""
    (root / "imgs").mkdir(parents=True)
    labels = {}
    for k in range(n):
        name = f"{k:04d}.png"
        Image.fromarray(mnist.train.images[k]).save(root / "imgs" / name)
        labels[name] = int(mnist.train.labels[k])
    return labels


def _start(root: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "relcomp", "annotate", "--images", str(root / "imgs"),
                             "--comparisons", str(root / "j.csv"), "--port", "0", "--learn", "weak", "--classes", "10",
                             "--seed", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    assert "open http://" in line, line + proc.stderr.read()
    return proc, line.split("open ")[1].split()[0]


def _wait(url: str, until, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = call(url, "api/status")[1]
        if until(s):
            return s
        time.sleep(0.2)
    raise AssertionError(f"timed out; status {s}")


def _agreement_from_files(comps: Path) -> tuple[float, int]:
    """The running agreement recomputed from the CSV and the recorded predictions alone."""
    with open(str(comps) + ".model.csv", newline="") as f:
        predicted = {tuple(sorted((r["a"], r["b"]))): r for r in csv.DictReader(f)}
    agree = []
    for r in csv.DictReader(open(comps, newline="")):
        p = predicted.get(tuple(sorted((r["a"], r["b"]))))
        if p is None or r["outcome"] not in "<>":
            continue
        p_a = float(p["p_greater"]) if p["a"] == r["a"] else 1 - float(p["p_greater"])
        agree.append((p_a > 0.5) == (r["outcome"] == ">"))
    return float(np.mean(agree[-50:])), len(agree[-50:])


def test_an_oracle_judges_300_pairs_while_the_model_learns(mnist, tmp_path):
    labels = _mnist_folder(tmp_path, mnist, 2000)
    proc, url = _start(tmp_path, "--round-steps", "40", "--learn-every", "3600")
    try:
        # rounds at 20, 40, 80 and 160 judgements: wait for each, as a person would simply keep judging
        r = simulate(url, labels, 300, wait_for_version={25: 1, 45: 2, 85: 3, 165: 4})
        status = _wait(url, lambda s: s["version"] >= 4 and not s["training"])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert r["judged"] == 300 and set(r["versions_seen"]) >= {0, 1, 2, 3, 4}
    assert r["next_ms_p99"] < 1000  # the page never waits for a round (the bench-style figure is in the README)
    rounds = [json.loads(x) for x in (tmp_path / "j.csv.rounds" / "rounds.jsonl").read_text().splitlines()]
    assert [x["version"] for x in rounds][:4] == [1, 2, 3, 4] and rounds[0]["trained_on"] >= 20
    assert status["agreement"] == pytest.approx(_agreement_from_files(tmp_path / "j.csv")[0])
    assert status["agreement_n"] == _agreement_from_files(tmp_path / "j.csv")[1] == 50
    # the latest round is an ordinary run: predict the folder's images (labels never shown to the server)
    import relcomp

    last = tmp_path / "j.csv.rounds" / f"round-{rounds[-1]['version']:03d}"
    names = sorted(labels)
    predicted = relcomp.predict(last, [tmp_path / "imgs" / n for n in names])
    truth = [labels[n] for n in names]
    accuracy = np.mean([p["class"] == t for p, t in zip(predicted, truth)])
    rho = spearmanr([np.dot(p["probabilities"], np.arange(10)) for p in predicted], truth).statistic
    print(f"300 judgements, {len(rounds)} rounds: classification of the 2,000 images {accuracy:.3f}, order rho {rho:.2f}, "
          f"agreement {status['agreement']:.2f}, next pair p50 {r['next_ms_p50']:.1f} ms p99 {r['next_ms_p99']:.1f} ms")
    # 165 comparisons and 40-step rounds order the digits (rho 0.70 measured; 0.53 after round 1), but
    # naming all ten classes exactly is too much to ask: 0.18 and 0.28 were measured (chance 0.10)
    assert rho > 0.5 and accuracy > 0.12


def test_sigkill_of_the_trainer_or_the_server_loses_nothing_and_resumes(mnist, tmp_path):
    labels = _mnist_folder(tmp_path, mnist, 300)
    proc, url = _start(tmp_path, "--round-steps", "200", "--learn-every", "3600")
    comps, rounds = tmp_path / "j.csv", tmp_path / "j.csv.rounds"
    try:
        simulate(url, labels, 22)
        _wait(url, lambda s: s["training"])
        deadline = time.monotonic() + 120  # the trainer has written its first checkpoint: kill it mid-round
        while not (rounds / "round-001" / "checkpoint.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        trainer = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "relcomp.cli.worker"], capture_output=True,
                                                   text=True).stdout.split()]  # the trainer process, mid-round
        for pid in trainer:
            os.kill(pid, signal.SIGKILL)
        s = _wait(url, lambda s: s["error"] is not None)
        assert "round 1 failed" in s["error"]
        assert simulate(url, labels, 5)["judged"] == 5  # the page goes on
        proc.send_signal(signal.SIGKILL)  # and now the server, mid-whatever
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = list(csv.DictReader(open(comps, newline="")))
    assert len(rows) == 27 and comps.read_text().endswith("\n")
    proc, url = _start(tmp_path, "--round-steps", "20", "--learn-every", "3600")
    try:
        s = _wait(url, lambda s: s["version"] >= 1)  # the interrupted round is resumed, then served
        assert s["judged"] == 27 and s["trained_on"] == 22
        assert (rounds / "round-001" / "best.safetensors").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
