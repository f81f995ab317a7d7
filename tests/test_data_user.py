"""A user's images, comparisons and labels: formats, every validation case, the split."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from relcomp.cli import main
from relcomp.data.comparisons import ValidationError, largest_label, load_comparisons, load_labels
from relcomp.data.images import load_image_file, load_images, load_inputs
from relcomp.data.user import load_user_data
from relcomp.errors import DataError
from relcomp.losses import get_loss, relation_loss
from relcomp.models import build_model


def _folder(tmp_path, n=6):
    """n images: mixed sizes, grayscale and colour, in a subfolder too."""
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        if k % 2:
            Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(d / f"c{k}.jpg")
        else:
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(d / "sub" / f"g{k}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _csv(path, rows, header=("a", "b", "outcome")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_folder_any_size_and_mode(tmp_path):
    s = load_images(_folder(tmp_path), size=28, channels=1)
    assert s.images.shape == (6, 1, 28, 28) and s.images.dtype == np.uint8
    assert s.names == ["c1.jpg", "c3.jpg", "c5.jpg", "sub/g0.png", "sub/g2.png", "sub/g4.png"]
    rgb = load_images(tmp_path / "imgs", size=16, channels=3)
    assert rgb.images.shape == (6, 3, 16, 16)
    # a grayscale PNG at its own size is kept exactly
    raw = np.asarray(Image.open(tmp_path / "imgs" / "sub" / "g0.png"))
    assert np.array_equal(s.images[3, 0], raw)


def test_npy_shapes_and_dtypes(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    s = load_images(tmp_path / "a.npy")
    assert np.array_equal(s.images[:, 0], a) and s.names == ["0", "1", "2", "3", "4"]
    np.save(tmp_path / "f.npy", a[:, None].astype(np.float32) / 255)
    assert np.array_equal(load_images(tmp_path / "f.npy").images, s.images)
    np.save(tmp_path / "big.npy", np.repeat(a[:, None], 3, 1))
    assert load_images(tmp_path / "big.npy", size=12, channels=1).images.shape == (5, 1, 12, 12)
    for bad, msg in [(np.zeros((5, 2, 8, 8), np.uint8), "expected shape"), (np.full((2, 8, 8), 2.0), "in \\[0, 1\\]"),
                     (np.zeros((2, 8, 8), np.int64), "uint8 or float")]:
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(DataError, match=msg):
            load_images(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy: not a readable"):
        load_images(tmp_path / "obj.npy")  # never unpickled


def test_unreadable_images_all_named(tmp_path):
    d = _folder(tmp_path)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (d / "sub" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_images(d)
    assert "2 unreadable image(s)" in str(e.value)
    assert "broken.png" in str(e.value) and "empty.jpg" in str(e.value)
    with pytest.raises(DataError, match="no image files"):
        load_images(_empty(tmp_path))
    with pytest.raises(DataError, match="no such file"):
        load_images(tmp_path / "missing")
    with pytest.raises(DataError, match="image not found"):
        load_image_file(tmp_path / "missing.png")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_load_inputs_mixes_files_folders_arrays(tmp_path):
    d = _folder(tmp_path)
    np.save(tmp_path / "a.npy", np.zeros((2, 28, 28), np.uint8))
    s = load_inputs([d / "c1.jpg", d / "sub", tmp_path / "a.npy"])
    assert len(s) == 1 + 3 + 2 and s.names[-1].endswith("a.npy[1]")


@pytest.fixture
def items(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((6, 28, 28), np.uint8))
    return load_images(tmp_path / "x.npy")


def test_outcome_spellings_weights_annotators(tmp_path, items):
    rows = [(0, 1, "1", "ann", "2"), (1, 2, "0", "ann", "1"), (2, 3, ">", "bob", "0.5"), (3, 4, "<", "bob", "1"),
            (4, 5, "a", "ann", "1"), (5, 0, "B", "bob", "1"), (0, 2, " true ", "ann", "1")]
    c = load_comparisons(_csv(tmp_path / "c.csv", rows, ("a", "b", "outcome", "annotator", "weight")), items)
    assert list(c.z) == [1, 0, 1, 0, 1, 0, 1]
    assert list(c.w) == [2, 1, 0.5, 1, 1, 1, 1]
    assert c.report.stats["annotators"] == 2 and c.report.stats["per_annotator"]["bob"]["judgements"] == 3
    assert c.pairs().w is not None


def test_every_error_names_file_line_value(tmp_path, items):
    rows = [(0, 1, "1"), (0, 9, "1"), (2, 2, "0"), (1, 3, "maybe"), (1, 4, "1", "x")]
    with pytest.raises(ValidationError) as e:
        load_comparisons(_csv(tmp_path / "c.csv", rows), items)
    assert "\n" not in str(e.value) and str(e.value).endswith("the first of 4 (`relcomp data check` lists them all)")
    text = e.value.report.text()
    assert "4 error(s)" in text
    assert f"{tmp_path / 'c.csv'}:3: column b: unknown item '9'" in text
    assert f"{tmp_path / 'c.csv'}:4: self-comparison: a and b are both '2'" in text
    assert f"{tmp_path / 'c.csv'}:5: column outcome: unknown value 'maybe'" in text
    assert f"{tmp_path / 'c.csv'}:6: 4 fields where the header has 3" in text
    bad_w = _csv(tmp_path / "w.csv", [(0, 1, "1", "-1"), (1, 2, "1", "nan"), (1, 3, "1", "1e300"), (1, 4, "1", "1e6")],
                 ("a", "b", "outcome", "weight"))
    with pytest.raises(ValidationError, match=r"w.csv:2: column weight: '-1' is not a number from 0 to 1e\+06") as e:
        load_comparisons(bad_w, items)
    assert len(e.value.report.errors) == 3 and "w.csv:4: column weight: '1e300'" in e.value.report.errors[2]


def test_missing_file_and_columns(tmp_path, items):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        load_comparisons(tmp_path / "nope.csv", items)
    with pytest.raises(DataError, match="missing column.*outcome; found a, b, winner"):
        load_comparisons(_csv(tmp_path / "c.csv", [(0, 1, "1")], ("a", "b", "winner")), items)
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_comparisons(tmp_path / "e.csv", items)
    with pytest.raises(ValidationError, match="no comparisons"):
        load_comparisons(_csv(tmp_path / "h.csv", []), items)
    (tmp_path / "bin.csv").write_bytes(b"a,b,outcome\n\xff\xfe\x00\x01,1,1\n")
    with pytest.raises(DataError, match="bin.csv"):
        load_comparisons(tmp_path / "bin.csv", items)


def test_duplicates_contradictions_never_compared(tmp_path, items):
    # pair {0,1}: judged 0>1 twice and 1>0 once (contradiction); pair {2,3}: duplicate; 5 never compared
    rows = [(0, 1, "1"), (1, 0, "0"), (1, 0, "1"), (2, 3, "1"), (2, 3, "1"), (3, 4, "0")]
    path = _csv(tmp_path / "c.csv", rows)
    keep = load_comparisons(path, items, "keep")
    s = keep.report.stats
    assert (s["duplicate_judgements"], s["contradicting_pairs"], s["contradicting_judgements"]) == (1, 1, 3)
    assert len(keep) == 6
    assert any("never compared (5)" in w for w in keep.report.warnings)
    assert len(load_comparisons(path, items, "drop")) == 3
    maj = load_comparisons(path, items, "majority")
    assert len(maj) == 5 and list(maj.a[:2]) == [0, 1] and list(maj.z[:2]) == [1, 0]


def test_ties_read_counted_and_dropped_under_gt(tmp_path, items):
    # pair {0,1}: a tie twice (a duplicate, in both orders) ; pair {2,3}: 2 > 3 and a tie (a
    # contradiction); pair {4,5}: a tie once
    rows = [(0, 1, "="), (1, 0, "tie"), (2, 3, "1"), (3, 2, "Equal"), (4, 5, "="), (1, 2, ">")]
    path = _csv(tmp_path / "c.csv", rows, ("a", "b", "outcome"))
    c = load_comparisons(path, items)
    assert list(c.z) == [2, 2, 1, 2, 2, 1]
    s = c.report.stats
    assert (s["ties"], s["duplicate_judgements"], s["contradicting_pairs"]) == (4, 1, 1)
    maj = load_comparisons(path, items, "majority")  # {2,3}: one vote each way, no majority
    assert sorted(zip(maj.a.tolist(), maj.b.tolist())) == [(0, 1), (1, 0), (1, 2), (4, 5)]
    gt = c.without_ties()
    assert list(gt.z) == [1, 1] and any("4 tie judgement(s) dropped" in w for w in c.report.warnings)
    ge = c.pairs()
    assert ge.z.tolist() == [2, 2, 1, 2, 2, 1]
    ties = _csv(tmp_path / "t.csv", [(0, 1, "=")])
    with pytest.raises(DataError, match="every judgement is a tie; train with --relation ge"):
        load_user_data(items, ties, val_fraction=0.5)
    with pytest.raises(ValidationError, match="= or tie for a tie"):
        load_comparisons(_csv(tmp_path / "bad.csv", [(0, 1, "~")]), items)


def test_ge_loss_on_user_ties_matches_mnist_codes():
    """A user's tie (code 2) is the MNIST ge relation's tie: the weak model's loss is -log P(tie)."""
    from relcomp.losses import log_prob_relations

    torch.manual_seed(0)
    model = build_model("weak", 5, relation="ge")
    la, lb = torch.randn(3, 5), torch.randn(3, 5)
    out = model.pair_output(la, lb)
    z = torch.tensor([0, 1, 2])
    lp = log_prob_relations(la.log_softmax(-1), lb.log_softmax(-1))
    want = -(lp[0, 0] + lp[1, 1] + lp[2, 2]) / 3
    assert torch.allclose(get_loss("unconditional", "ge")(out, z), want, atol=1e-5)


def test_split_keeps_pairs_together_and_is_seeded(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((50, 28, 28), np.uint8))
    items = load_images(tmp_path / "x.npy")
    rng = np.random.default_rng(0)
    rows = [(int(i), int(j), "1") for i, j in rng.integers(0, 50, (600, 2)) if i != j]
    c = load_comparisons(_csv(tmp_path / "c.csv", rows), items)
    tr, va = c.split(0.2, seed=3)
    assert len(tr) + len(va) == len(c)
    key = lambda p: set(map(tuple, np.sort(np.stack([p.i, p.j], 1), 1).tolist()))  # noqa: E731
    assert not key(tr) & key(va)
    assert abs(len(key(va)) / (len(key(tr)) + len(key(va))) - 0.2) < 0.01
    tr2, _ = c.split(0.2, seed=3)
    assert np.array_equal(tr.i, tr2.i)
    assert not np.array_equal(tr.i, c.split(0.2, seed=4)[0].i)
    with pytest.raises(DataError, match="cannot be split"):
        load_comparisons(_csv(tmp_path / "one.csv", [(0, 1, "1")]), items).split(0.1, 0)


def test_labels(tmp_path, items):
    y = load_labels(_csv(tmp_path / "l.csv", [(0, 3), (2, 1)], ("item", "label")), items)
    assert list(y) == [3, -1, 1, -1, -1, -1]
    assert largest_label(tmp_path / "l.csv") == 3  # without the images (how --classes defaults)
    with pytest.raises(ValidationError) as e:
        load_labels(_csv(tmp_path / "b.csv", [(0, "x"), (9, 1), (1, 2), (1, 3), (2, -1)], ("item", "label")), items)
    t = e.value.report.text()
    assert "b.csv:2: column label: 'x'" in t and "b.csv:3: column item: unknown item '9'" in t
    assert "b.csv:5: item '1' labelled 3 here but 2 earlier" in t and "b.csv:6: column label: '-1'" in t


def test_parquet(tmp_path, items):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"A": [0, 1], "b": [1, 2], "outcome": [1, 0]}), tmp_path / "c.parquet")
    c = load_comparisons(tmp_path / "c.parquet", items)
    assert list(c.z) == [1, 0]
    pq.write_table(pa.table({"a": [0], "b": [7], "outcome": ["?"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValidationError, match=r"bad.parquet:row 1: column b: unknown item '7'"):
        load_comparisons(tmp_path / "bad.parquet", items)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet"):
        load_comparisons(tmp_path / "junk.parquet", items)


def test_user_data_fingerprint_and_class_check(tmp_path, items):
    rows = [(i, j, "1") for i in range(6) for j in range(i)]
    c = _csv(tmp_path / "c.csv", rows)
    lab = _csv(tmp_path / "l.csv", [(0, 4)], ("item", "label"))
    ud = load_user_data(tmp_path / "x.npy", c, lab, val_fraction=0.2, num_classes=5)
    assert set(ud.fingerprint) == {"images", "comparisons", "labels"} and len(ud.val) == 3
    with pytest.raises(DataError, match="label 4, but --classes is 3"):
        load_user_data(tmp_path / "x.npy", c, lab, num_classes=3)


def test_weighted_losses_match_explicit_loop():
    torch.manual_seed(0)
    la, lb, z, w = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 2, (6,)).float(), torch.rand(6)
    weak = build_model("weak")
    for name in ("unconditional", "symmetric"):
        loss = get_loss(name)
        per = torch.stack([loss(weak.pair_output(la[k:k + 1], lb[k:k + 1]), z[k:k + 1]) for k in range(6)])
        assert torch.allclose(loss(weak.pair_output(la, lb), z, w), (per * w).mean(), atol=1e-6)
    logit = torch.randn(6)
    per = torch.stack([relation_loss(logit[k:k + 1], z[k:k + 1]) for k in range(6)])
    assert torch.allclose(relation_loss(logit, z, w), (per * w).mean(), atol=1e-6)
    assert torch.allclose(relation_loss(logit, z, torch.ones(6)), relation_loss(logit, z))


def test_cli_check_exit_codes(tmp_path, items, capsys):
    good = _csv(tmp_path / "c.csv", [(i, j, "1") for i in range(6) for j in range(i)])
    assert main(["data", "check", "--images", str(tmp_path / "x.npy"), "--comparisons", str(good)]) == 0
    assert "OK: 6 images" in capsys.readouterr().out
    bad = _csv(tmp_path / "bad.csv", [(0, 1, "1"), (0, 1, "??")])
    assert main(["data", "check", "--images", str(tmp_path / "x.npy"), "--comparisons", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relcomp: error: ") and f"{bad}:3: column outcome: unknown value '??'" in err
    assert "Traceback" not in err


def _check(tmp_path, rows, header=("a", "b", "outcome"), images=None, extra=()):
    comp = _csv(tmp_path / "cases.csv", rows, header)
    return main(["data", "check", "--images", str(images or tmp_path / "x.npy"), "--comparisons", str(comp), *extra])


GOOD = [(i, j, "1") for i in range(6) for j in range(i)]


@pytest.mark.parametrize("case, rows, header, message", [
    ("unknown outcome", GOOD + [(0, 1, "yes")], None, "cases.csv:17: column outcome: unknown value 'yes'"),
    ("self-comparison", GOOD + [(3, 3, "1")], None, "cases.csv:17: self-comparison: a and b are both '3'"),
    ("unknown item", GOOD + [(0, 77, "1")], None, "cases.csv:17: column b: unknown item '77'"),
    ("bad weight", [(0, 1, "1", "heavy")], ("a", "b", "outcome", "weight"), "cases.csv:2: column weight: 'heavy'"),
    ("missing column", [(0, 1)], ("a", "b"), "missing column(s) outcome"),
    ("short line", GOOD + [(0,)], None, "cases.csv:17: 1 fields where the header has 3"),
])
def test_cli_each_error_case_exits_2(tmp_path, items, capsys, case, rows, header, message):
    assert _check(tmp_path, rows, header or ("a", "b", "outcome")) == 2, case
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, (case, err)


def test_cli_missing_files_and_unreadable_images_exit_2(tmp_path, items, capsys):
    assert main(["data", "check", "--images", str(tmp_path / "x.npy"), "--comparisons", str(tmp_path / "no.csv")]) == 2
    assert "no.csv: file not found" in capsys.readouterr().err
    assert _check(tmp_path, GOOD, images=tmp_path / "nowhere") == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    d = _folder(tmp_path)
    (d / "bad.png").write_bytes(b"not a png")
    assert main(["data", "check", "--images", str(d), "--comparisons", str(_csv(tmp_path / "c.csv", [("c1.jpg", "c3.jpg", "a")]))]) == 2
    assert "bad.png: unreadable image" in capsys.readouterr().err


def test_cli_warnings_are_reported_not_fatal(tmp_path, items, capsys):
    rows = [(1, 0, "1"), (1, 0, "1"), (2, 1, "1"), (1, 2, "1"), (3, 2, ">"), (4, 3, "a"), (2, 4, "<")]
    assert _check(tmp_path, rows, extra=("--val-fraction", "0.3")) == 0
    out = capsys.readouterr().out
    assert "1 duplicate judgement(s)" in out and "1 pair(s) judged differently in 2 judgements (kept" in out
    assert "1 item(s) never compared (5): no comparison teaches" in out and "as unlabeled images" in out
    assert "not trained on" not in out  # the unlabeled-image term does train on them
    assert _check(tmp_path, rows, extra=("--val-fraction", "0.3", "--contradictions", "drop", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stats"]["comparisons_used"] == 5 and report["stats"]["contradicting_pairs"] == 1
