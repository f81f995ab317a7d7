"""Bad input never crashes (#28): what relcomp reads back from disk (a run's config.json, its
weights, labels, comparisons, images) and where it writes (a full disk, --out) fail with exit 2,
one line on stderr that starts ``relcomp``, no traceback, and nothing written."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import mnist_cfg
from relcomp.checkpoint import read_weights, save_weights
from relcomp.cli import main
from relcomp.config import resolve
from relcomp.engine import train

FUZZ = settings(max_examples=int(os.environ.get("RELCOMP_FUZZ_EXAMPLES", 60)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = dict(model="weak", pairs="2000", samples=1000, train_subset=1000, val_subset=200, val_pairs=500,
            eval_every=1000, precision="fp32", progress=False, dropout=0.0)


def cli(*args) -> tuple[int, str, str]:
    """``relcomp ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    """The error line, after asserting it is the only line on stderr (what a terminal shows: a
    progress bar cleared with carriage returns is not a line; a warning before it is its own line)."""
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("relcomp: warning: "))
    assert err.count("\n") == 1 and err.endswith("\n"), err
    line = err.split("\r")[-1].strip()
    assert line.startswith("relcomp: error: ") and "Traceback" not in err, err
    return line


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("bad") / "run"
    train(mnist_cfg(**TINY, data_dir=str(data_dir)), out)
    return out


@pytest.fixture
def digit(tmp_path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))).save(path)
    return path


def edited(run: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``run`` whose config.json went through ``edit`` (which returns the new JSON)."""
    copy = tmp_path / "edited"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    d = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(edit(d)).replace("Infinity", "1e999"))
    return copy


# --- 1. config.json -------------------------------------------------------------------------------

def setter(key, value):
    def edit(d):
        if key is None:
            return value
        where = d["data"] if key.startswith("data.") else d
        where[key.removeprefix("data.")] = value
        return d
    return edit


CONFIG_CASES = [("num_classes", -5, "--classes must be from 2 to 1000, got -5"),
                ("num_classes", "10", "field num_classes is '10'; expected an integer"),
                ("num_classes", 2.5, "field num_classes is 2.5; expected an integer"),
                ("num_classes", None, "field num_classes is null; expected an integer"),
                ("num_classes", float("inf"), "field num_classes is inf; expected an integer"),
                ("num_classes", 10**12, "--classes must be from 2 to 1000"),
                ("dropout", 5, "--dropout must be in [0, 1), got 5"),
                ("lr", "fast", "field lr is 'fast'; expected a finite number"),
                ("seed", 10**30, "--seed must be from 0 to 2^63 - 1"),
                ("batch_size", 10**9, "--batch-size must be at most 65,536"),
                ("model", ["weak"], "field model is ['weak']; expected a string"),
                ("data", [1, 2], "data: expected a JSON object, got list"),
                ("data.train_subset", "5", "data: field train_subset is '5'; expected an integer or null"),
                ("data.source", "s3", "data: unknown data source 's3'"),
                (None, [1, 2], "not a relcomp config (a JSON list, not an object)")]


@pytest.mark.mnist
@pytest.mark.parametrize("key,value,message", CONFIG_CASES, ids=[f"{k}={v!r}"[:30] for k, v, _ in CONFIG_CASES])
def test_a_bad_config_json_is_one_line_naming_the_file_field_and_value(run, tmp_path, digit, key, value, message):
    copy = edited(run, tmp_path, setter(key, value))
    before = snapshot(copy)
    for args in (("eval", copy), ("predict", copy, digit), ("export", copy), ("train", "--resume", copy)):
        rc, _, err = cli(*args)
        line = one_line(err)
        assert rc == 2 and f"{copy / 'config.json'}: " in line and message in line, (args, line)
    assert snapshot(copy) == before


@pytest.mark.mnist
def test_a_user_runs_image_size_is_checked_too(run, tmp_path, digit):
    def user(size):
        return lambda d: {**d, "data": {"source": "user", "images": str(tmp_path), "comparisons": "c.csv",
                                        "image_size": size}}
    for size, message in ((10**9, "--image-size must be a multiple of 4 from 4 to 1024"),
                          ("28", "data: field image_size is '28'; expected an integer")):
        rc, _, err = cli("predict", edited(run, tmp_path, user(size)), digit)
        assert rc == 2 and message in one_line(err)


@pytest.mark.mnist
def test_a_huge_feature_dim_is_one_line_not_an_allocation(run, tmp_path, digit):
    # found by the fuzz below: the model builder asked for 27 GB (once the OOM killer took the worker)
    for value in (6_794_072_536, 0, -3):
        rc, _, err = cli("predict", edited(run, tmp_path, setter("data.feature_dim", value)), digit)
        assert rc == 2 and "feature_dim must be an integer from 1 to 65,536" in one_line(err), err


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
                    max_leaves=6)
FIELDS = ["model", "relation", "loss", "num_classes", "backbone", "dropout", "unlabeled", "augment", "seed",
          "class_proportions", "batch_size", "precision", "init_from", "data", "data.pairs", "data.val_pairs",
          "data.features", "data.feature_dim", "data.flip_rate", "data.source", None]


@pytest.mark.mnist
@FUZZ
@given(key=st.sampled_from(FIELDS), value=JSON)
def test_fuzz_config_json(run, tmp_path, digit, key, value):
    copy = edited(run, tmp_path, setter(key, value))
    before = snapshot(copy)
    rc, out, err = cli("predict", copy, digit)
    assert rc in (0, 2)
    if rc == 2:
        one_line(err)
        assert snapshot(copy) == before
    else:
        assert "class" in out  # a value that happens to be valid: predict still works


# --- 2. weights -------------------------------------------------------------------------------------

def rewritten(run: Path, tmp_path: Path, change) -> Path:
    """A copy of ``run`` whose best.safetensors tensors went through ``change``."""
    from safetensors.torch import save_file

    copy = tmp_path / "weights"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    tensors, meta = read_weights(copy / "best.safetensors")
    save_file(change(tensors), str(copy / "best.safetensors"), metadata={k: json.dumps(v) for k, v in meta.items()})
    return copy


@pytest.mark.mnist
@pytest.mark.parametrize("change,message", [
    (lambda t: {**t, "head.weight": t["head.weight"] * float("nan")}, "tensor head.weight holds NaN or infinite"),
    (lambda t: {**t, "head.bias": t["head.bias"] * float("inf")}, "tensor head.bias holds NaN or infinite"),
    (lambda t: {**t, "head.weight": t["head.weight"].long()}, "tensor head.weight is int64, but the model's is float32"),
    (lambda t: {**t, "head.bias": t["head.bias"] > 0}, "tensor head.bias is bool, but the model's is float32"),
], ids=["nan", "inf", "int64", "bool"])
def test_unusable_weights_are_refused_in_one_line(run, tmp_path, digit, change, message):
    copy = rewritten(run, tmp_path, change)
    for args in (("eval", copy), ("predict", copy, digit)):
        before = snapshot(copy)
        rc, _, err = cli(*args)
        assert rc == 2 and message in one_line(err)
        assert snapshot(copy) == before


def header_blob(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@pytest.mark.mnist
@FUZZ
@given(field=st.sampled_from(["dtype", "shape", "data_offsets", None]), value=JSON,
       name=st.sampled_from(["head.weight", "head.bias", "__metadata__"]))
def test_fuzz_safetensors_header(run, tmp_path, digit, field, value, name):
    copy = tmp_path / "header"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    header, data = header_blob(copy / "best.safetensors")
    if field is None:
        header[name] = value
    elif name in header and isinstance(header[name], dict):
        header[name][field] = value
    text = json.dumps(header).encode()
    (copy / "best.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + data)
    rc, out, err = cli("predict", copy, digit)
    assert rc in (0, 2)
    if rc == 2:
        one_line(err)


def test_identical_weights_give_identical_files(tmp_path):
    import torch

    model = torch.nn.Linear(3, 2)
    meta = {"relcomp_model": "weak", "num_classes": 10, "format": "relcomp-weights/1", "backbone": "paper",
            "input_dim": None, "image_size": 28, "in_channels": 1, "relation": "gt", "finetune": False}
    save_weights(tmp_path / "a.safetensors", model, meta)
    save_weights(tmp_path / "b.safetensors", model, dict(reversed(list(meta.items()))))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    tensors, back = read_weights(tmp_path / "b.safetensors")
    assert back == meta and torch.equal(tensors["weight"], model.weight.detach())
    # (two dicts in one process already hash their keys differently: this failed before #28)


# --- 3-6. labels, weights column, 16-bit images, duplicate header --------------------------------------

@pytest.fixture
def user_data(tmp_path, mnist) -> dict[str, Path]:
    from conftest import write_user_data

    return write_user_data(tmp_path / "u", mnist.train.images[:60], mnist.train.labels[:60], 200)


def with_label(user_data, value) -> Path:
    lines = user_data["labels"].read_text().splitlines()
    item = lines[1].split(",")[0]
    path = user_data["labels"].with_name("bad-labels.csv")
    path.write_text("\n".join([lines[0], f"{item},{value}", *lines[2:]]) + "\n")
    return path


@pytest.mark.mnist
@pytest.mark.parametrize("value", ["99999999999999999999", "1000000000", "10000000", "1000", "-1", "2.5", "x"])
def test_labels_beyond_a_sane_k_are_refused_before_any_allocation(user_data, tmp_path, value):
    labels = with_label(user_data, value)
    for args in (("data", "check", "--images", user_data["images"], "--comparisons", user_data["comparisons"],
                  "--labels", labels),
                 ("train", "weak", "--images", user_data["images"], "--comparisons", user_data["comparisons"],
                  "--labels", labels, "--samples", "100", "--out", tmp_path / "r", "--quiet")):
        rc, _, err = cli(*args)
        line = one_line(err)
        assert rc == 2 and f"bad-labels.csv:2: column label: '{value}' is not a class number from 0 to 999" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.mnist
@FUZZ
@given(cell=st.text(max_size=25) | st.integers().map(str) | st.floats().map(str))
def test_fuzz_labels(user_data, cell):
    import csv

    rows = list(csv.reader(user_data["labels"].open()))
    path = user_data["labels"].with_name("fuzz-labels.csv")
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0], [rows[1][0], cell], *rows[2:]])
    rc, out, err = cli("data", "check", "--images", user_data["images"], "--comparisons", user_data["comparisons"],
                       "--labels", path)
    assert rc in (0, 2)
    if rc == 2:
        one_line(err)
    else:
        assert 0 <= int(cell.strip()) <= 999 and "OK:" in out


@pytest.mark.mnist
def test_weights_beyond_float32_sense_are_refused(user_data):
    comp = user_data["comparisons"]
    lines = comp.read_text().splitlines()
    comp.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",1e300", *lines[2:]]) + "\n")
    rc, out, err = cli("data", "check", "--images", user_data["images"], "--comparisons", comp)
    assert rc == 2 and "comparisons.csv:2: column weight: '1e300' is not a number from 0 to 1e+06" in one_line(err)
    assert "1 error(s)" in out  # data check lists every problem on stdout


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    from relcomp.data.images import load_image_file, load_images

    gray = (np.arange(28 * 28).reshape(28, 28) % 200).astype(np.uint16)
    Image.fromarray(gray * 257).save(tmp_path / "deep.png")  # 16 bits: 0 .. 51143
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "flat.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    deep, flat = load_image_file(tmp_path / "deep.png"), load_image_file(tmp_path / "flat.png")
    assert np.array_equal(deep, flat)
    assert load_image_file(tmp_path / "deep.png", 28, 3).shape == (3, 28, 28)
    assert load_images(tmp_path, 28).images.mean() == pytest.approx(flat.mean())
    Image.fromarray(gray.astype(np.float32)).save(tmp_path / "float.tiff")
    rc, _, err = cli("data", "check", "--images", tmp_path / "float.tiff", "--comparisons", tmp_path / "none.csv")
    assert rc == 2


@pytest.mark.mnist
def test_a_column_named_twice_is_refused(user_data):
    comp = user_data["comparisons"]
    lines = comp.read_text().splitlines()
    comp.write_text("\n".join(["a,a,b,outcome,annotator,weight", *("0," + x for x in lines[1:])]) + "\n")
    rc, _, err = cli("data", "check", "--images", user_data["images"], "--comparisons", comp)
    assert rc == 2 and "comparisons.csv: column(s) a named twice in the header" in one_line(err)


# --- 7-9. a full disk, --out, no debris ---------------------------------------------------------------

TRAIN = ["train", "weak", "--pairs", "2000", "--samples", "3000", "--train-subset", "1000", "--test-subset", "1000", "--val-subset", "200",
         "--val-pairs", "500", "--eval-every", "1000", "--precision", "fp32", "--dropout", "0", "--quiet",
         "--no-eval", "--unlabeled", "off"]


def small_disk(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` where this machine allows it (root, a kernel that lets us)."""
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.mnist
@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resume_matches_the_uninterrupted_run(data_dir, tmp_path, monkeypatch):
    ref, disk = tmp_path / "ref", tmp_path / "disk"
    assert cli(*TRAIN, "--data-dir", data_dir, "--out", ref)[0] == 0
    mounted = small_disk(disk, "6m")  # room for the first checkpoint (about 4 MB) and not the second
    try:
        if not mounted:  # else an injected ENOSPC at the second checkpoint's state file
            import relcomp.checkpoint

            real, calls = relcomp.checkpoint.save_state, []

            def full(path, state):
                calls.append(path)
                if len(calls) == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real(path, state)
            monkeypatch.setattr(relcomp.checkpoint, "save_state", full)
        rc, _, err = cli(*TRAIN, "--data-dir", data_dir, "--out", disk / "run")
        line = one_line(err)
        assert rc == 2 and "no space left on device while writing" in line, line
        assert line.endswith(f"the last checkpoint (1,000 samples) is intact; free space and run "
                             f"`relcomp train --resume {disk / 'run'}`")
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        monkeypatch.undo()
        assert cli("train", "--resume", disk / "run", "--quiet", "--no-eval")[0] == 0
        assert (disk / "run" / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
        assert (disk / "run" / "best.safetensors").read_bytes() == (ref / "best.safetensors").read_bytes()
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.mnist
def test_nothing_trained_leaves_no_folder_and_out_must_be_a_folder(run, data_dir, tmp_path, monkeypatch):
    import relcomp.checkpoint

    def full(path, state):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(relcomp.checkpoint, "save_state", full)
    rc, _, err = cli(*TRAIN, "--data-dir", data_dir, "--out", tmp_path / "r")
    assert rc == 2 and one_line(err).endswith("nothing was trained yet; free space and run the same command again")
    assert not (tmp_path / "r").exists()
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file", "is a file; --out names a run folder"),
                         (tmp_path / "file" / "a" / "b", f"is under {tmp_path / 'file'}, which is a file")):
        rc, _, err = cli(*TRAIN, "--data-dir", data_dir, "--out", out)
        assert rc == 2 and message in one_line(err)
    rc, _, err = cli("train", "siamese", "--init-from", run, "--out", tmp_path / "init", "--data-dir", data_dir,
                     *TRAIN[2:])
    assert rc == 2 and "--init-from" in one_line(err) and not (tmp_path / "init").exists()


@pytest.mark.mnist
def test_failed_validation_leaves_no_run_folder(user_data, tmp_path):
    comp = user_data["comparisons"]
    comp.write_text(comp.read_text() + "nope.png,also-nope.png,1,x,1\n")
    rc, _, err = cli("train", "weak", "--images", user_data["images"], "--comparisons", comp, "--classes", "10",
                     "--out", tmp_path / "r", "--quiet")
    assert rc == 2 and "unknown item 'nope.png'" in one_line(err)
    assert not (tmp_path / "r").exists()


# --- 10. every error is one line ------------------------------------------------------------------------

def test_an_error_under_an_open_progress_bar_is_still_one_line(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(40):
        Image.fromarray(np.full((8, 8), k, np.uint8)).save(folder / f"{k:02d}.png")
    (folder / "99.png").write_bytes(b"not a png")
    (tmp_path / "c.csv").write_text("a,b,outcome\n00.png,01.png,1\n")
    rc, _, err = cli("data", "check", "--images", folder, "--comparisons", tmp_path / "c.csv")
    assert rc == 2 and "99.png: unreadable image" in one_line(err)


def test_a_crafted_state_file_is_one_line_without_torchs_advice(tmp_path, run):
    import pickle

    copy = tmp_path / "crafted"
    shutil.copytree(run, copy)
    pointer = json.loads((copy / "checkpoint.json").read_text())
    (copy / pointer["state"]).write_bytes(pickle.dumps({"x": print}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:  # what a user's terminal would show
        warnings.simplefilter("always")
        rc, _, err = cli("train", "--resume", copy, "--quiet", "--no-eval")
    line = one_line(err)
    assert rc == 2 and "refused or corrupt training state" in line and "weights_only=False" not in err
    assert not [w for w in caught if "pickle" in str(w.message)]


def test_a_multi_line_message_is_joined():
    from relcomp.cli import say

    err = io.StringIO()
    with redirect_stderr(err):
        say("relcomp: error: first\n  second\n\nthird")
    assert err.getvalue() == "relcomp: error: first second third\n"


# --- 12. few comparisons: a sensible evaluation interval ---------------------------------------------------

def test_the_default_evaluation_interval_is_sensible_for_any_set_size():
    for n, every in ((100, 10_000), (5_000, 10_000), (50_000, 50_000), (5_000_000, 100_000)):
        assert resolve(mnist_cfg(model="weak", pairs="100")).eval_interval(n) == every
    assert resolve(mnist_cfg(model="weak", eval_every=500)).eval_interval(100) == 500
