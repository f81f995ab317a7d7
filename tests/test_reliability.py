"""Crashes, interruptions, failed writes, concurrent caches, hostile files and determinism."""
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import mnist_cfg
from relcomp.checkpoint import load_checkpoint, load_state, read_weights, save_weights
from relcomp.data.idx import parse_idx, write_idx
from relcomp.data.pairs import load_pairs, make_pairs, save_pairs
from relcomp.engine import train
from relcomp.errors import CheckpointError, RelcompError, TrainingError, WriteError
from relcomp.models import build_model
from relcomp.utils import read_jsonl


def tiny(**kw):
    base = dict(model="weak", pairs="4000", samples=3000, train_subset=2000, val_subset=500, val_pairs=1000,
                eval_every=1000, precision="fp32", progress=False)
    base.update(kw)
    return mnist_cfg(**base)


def _cli(*args):
    return [sys.executable, "-m", "relcomp", *args]


# --- crashes and interruptions ------------------------------------------------------------------

KILL_ARGS = ["siamese", "--pairs", "8000", "--samples", "8000", "--train-subset", "2000", "--val-subset", "300",
             "--val-pairs", "500", "--eval-every", "1000", "--precision", "fp32", "--quiet", "--no-eval"]


@pytest.mark.mnist
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_to_the_same_result(data_dir, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref = subprocess.run(_cli("train", *KILL_ARGS, "--data-dir", str(data_dir), "--out", str(tmp_path / "ref")),
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(4):
        cmd = _cli("train", "--resume", str(run), "--quiet", "--no-eval") if (run / "config.json").exists() else \
            _cli("train", *KILL_ARGS, "--data-dir", str(data_dir), "--out", str(run))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = len(read_jsonl(run / "metrics.jsonl"))
        deadline = time.time() + 120
        while len(read_jsonl(run / "metrics.jsonl")) <= before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 1.2)))  # somewhere in a step, an evaluation or a checkpoint write
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # whatever the moment, the checkpoint the pointer names is complete and loadable
        load_checkpoint(run, build_model("siamese"))
        assert not [p for p in (run / "ckpt").glob("*") if p.name.startswith(".") and p.suffix != ".tmp"]
    assert kills >= 2
    done = subprocess.run(_cli("train", "--resume", str(run), "--quiet", "--no-eval"), capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "8,000 samples" in done.stdout
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
    a, b = read_weights(run / "best.safetensors")[0], read_weights(tmp_path / "ref" / "best.safetensors")[0]
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k


@pytest.mark.mnist
@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_says_how_to_resume(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("train", *KILL_ARGS, "--data-dir", str(data_dir), "--out", str(run)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"relcomp train --resume {run}" in err and "Traceback" not in err
    done = subprocess.run(_cli("train", "--resume", str(run), "--quiet", "--no-eval"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "8,000 samples" in done.stdout


@pytest.mark.mnist
def test_failed_write_keeps_the_previous_checkpoint(mnist, data_dir, tmp_path, monkeypatch):
    import relcomp.checkpoint

    real, calls = relcomp.checkpoint.save_state, {"n": 0}

    def disk_full(path, state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(path, state)

    monkeypatch.setattr("relcomp.checkpoint.save_state", disk_full)
    with pytest.raises(WriteError, match=r"no space left on device while writing a checkpoint into .*; the last "
                       r"checkpoint \(1,000 samples\) is intact; free space and run `relcomp train --resume "):
        train(tiny(data_dir=str(data_dir)), tmp_path / "r")
    state = load_checkpoint(tmp_path / "r", build_model("weak"))
    assert state["state"]["samples"] == 1000
    assert sorted(p.name for p in (tmp_path / "r" / "ckpt").iterdir()) == [
        "step000000008.safetensors", "step000000008.state.pt"]  # the failed checkpoint's weights are gone


@pytest.mark.mnist
def test_non_finite_loss_stops_with_the_step(mnist, data_dir, tmp_path, monkeypatch):
    import torch

    import relcomp.losses

    calls = {"n": 0}

    class NanAtStep10(relcomp.losses.SymmetricLoss):  # a loss is one class: a broken one is too
        def compute_loss(self, *a, **k):
            calls["n"] += 1
            loss = super().compute_loss(*a, **k)
            return loss * float("nan") if calls["n"] == 10 else loss

    monkeypatch.setitem(relcomp.losses.LOSSES, "symmetric", NanAtStep10)  # the weak default
    with pytest.raises(TrainingError, match=r"loss became nan at step 9 .*last good checkpoint"):
        train(tiny(data_dir=str(data_dir)), tmp_path / "r")
    assert load_checkpoint(tmp_path / "r", build_model("weak"))["state"]["samples"] == 1000
    assert torch.isfinite(read_weights(tmp_path / "r" / "best.safetensors")[0]["head.weight"]).all()


@pytest.mark.mnist
@pytest.mark.slow
def test_concurrent_pair_building_does_not_corrupt_the_cache(data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    code = ("import sys; from relcomp.data import load_mnist, mnist_pairs; d = sys.argv[1]; "
            "p = mnist_pairs(load_mnist(d), 'train', 2_000_000, 7, data_dir=d); print(int(p.i.sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1]
    files = list((tmp_path / "pairs").glob("*.npz"))
    assert len(files) == 1 and len(load_pairs(files[0])) == 2_000_000


# --- files from others -------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_state_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "state.pt"
    evil.write_bytes(pickle.dumps({"state": _Evil(marker)}))
    with pytest.raises(CheckpointError, match="refused or corrupt"):
        load_state(evil)
    assert not marker.exists()


@pytest.mark.slow
def test_crafted_checkpoint_via_cli_resume_is_exit_2(tmp_path):
    import json

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / "ckpt").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "weak", "samples": 1000}))
    save_weights(run / "ckpt" / "w.safetensors", build_model("weak"))
    (run / "ckpt" / "s.pt").write_bytes(pickle.dumps({"state": _Evil(marker)}))
    (run / "checkpoint.json").write_text(json.dumps({"weights": "ckpt/w.safetensors", "state": "ckpt/s.pt",
                                                     "step": 1, "samples": 1}))
    r = subprocess.run(_cli("train", "--resume", str(run), "--quiet"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "refused or corrupt" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def _good_idx() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_idx(f"{d}/x", np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4))
        return open(f"{d}/x", "rb").read()


def _mutate(data: bytes, positions: list[int], values: list[int], cut: int | None) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values):
        if b:
            b[p % len(b)] = v
    return bytes(b[:cut] if cut is not None else b)


FUZZ = settings(max_examples=int(os.environ.get("RELCOMP_FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mutations(max_pos: int, max_cut: int):
    """Strategies for up to four byte overwrites and an optional truncation."""
    return (st.lists(st.integers(0, max_pos), max_size=4), st.lists(st.integers(0, 255), max_size=4),
            st.one_of(st.none(), st.integers(0, max_cut)))


@FUZZ
@given(st.binary(max_size=200))
def test_idx_reader_random_bytes(data):
    try:
        parse_idx(data)
    except RelcompError:
        pass


@FUZZ
@given(*mutations(10_000, 60))
def test_idx_reader_mutated_files(positions, values, cut):
    try:
        parse_idx(_mutate(_good_idx(), positions, values, cut))
    except RelcompError:
        pass


@FUZZ
@given(*mutations(100_000, 3000))
def test_pair_loader_mutated_files(tmp_path, positions, values, cut):
    path = tmp_path / "p.npz"
    save_pairs(path, make_pairs(np.arange(50) % 10, 100, 0))
    path.write_bytes(_mutate(path.read_bytes(), positions, values, cut))
    try:
        load_pairs(path)
    except RelcompError:
        pass


@FUZZ
@given(*mutations(2_000_000, 2_000))
def test_checkpoint_loaders_mutated_files(tmp_path, positions, values, cut):
    import torch

    w, s = tmp_path / "w.safetensors", tmp_path / "s.pt"
    model = build_model("weak")
    save_weights(w, model)
    torch.save({"state": {"step": 1}, "optimizer": torch.optim.Adam(model.parameters()).state_dict()}, s)
    for path, load in ((w, read_weights), (s, load_state)):
        path.write_bytes(_mutate(path.read_bytes(), positions, values, cut))
        try:
            load(path)
        except RelcompError:
            pass


_GOOD_CSV = (b"a,b,outcome,annotator,weight\n0,1,1,x,1\n1,2,>,y,0.5\n2,3,a,x,2\n3,0,<,y,1\n"
             b"0,2,b,x,1\n1,3,0,y,1\n")


def _items(tmp_path):
    from relcomp.data.images import load_images

    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    return load_images(tmp_path / "x.npy", size=8)


@FUZZ
@given(st.binary(max_size=300))
def test_comparison_and_label_loaders_random_bytes(tmp_path, data):
    from relcomp.data.comparisons import load_comparisons, load_labels

    items = _items(tmp_path)
    for name, load in (("c.csv", load_comparisons), ("l.csv", load_labels), ("c.parquet", load_comparisons)):
        (tmp_path / name).write_bytes(data)
        try:
            load(tmp_path / name, items)
        except RelcompError:
            pass


@FUZZ
@given(*mutations(400, 200))
def test_comparison_loader_mutated_files(tmp_path, positions, values, cut):
    from relcomp.data.comparisons import load_comparisons

    items = _items(tmp_path)
    (tmp_path / "c.csv").write_bytes(_mutate(_GOOD_CSV, positions, values, cut))
    try:
        c = load_comparisons(tmp_path / "c.csv", items)
        assert len(c) > 0 and c.a.max() < 4 and (c.w >= 0).all()
    except RelcompError:
        pass


@FUZZ
@given(*mutations(2_000, 400))
def test_image_and_array_loaders_mutated_files(tmp_path, positions, values, cut):
    import io

    from PIL import Image

    from relcomp.data.images import load_images

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    (tmp_path / "imgs").mkdir(exist_ok=True)
    (tmp_path / "imgs" / "x.png").write_bytes(_mutate(buf.getvalue(), positions, values, cut))
    arr = io.BytesIO()
    np.save(arr, np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "a.npy").write_bytes(_mutate(arr.getvalue(), positions, values, cut))
    for path in (tmp_path / "imgs", tmp_path / "a.npy"):
        try:
            load_images(path, size=8)
        except RelcompError:
            pass


# --- determinism -------------------------------------------------------------------------------

@pytest.mark.mnist
@pytest.mark.slow
def test_same_seed_same_metrics(mnist, data_dir, tmp_path):
    for name in ("a", "b"):  # the default path: bf16 where the CPU has it, channels-last
        train(tiny(precision="auto", data_dir=str(data_dir)), tmp_path / name)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()
    # identical runs give identical files, not only identical tensors (#28: metadata in a fixed order)
    assert (tmp_path / "a" / "best.safetensors").read_bytes() == (tmp_path / "b" / "best.safetensors").read_bytes()
