import numpy as np
import pytest

from relcomp.data.pairs import load_pairs, make_pairs, mnist_pairs, pair_file, save_pairs
from relcomp.errors import DataError, ProvenanceError


def _labels(n=1000, k=10, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def test_pairs_are_valid():
    y = _labels()
    p = make_pairs(y, 20_000, seed=1)
    assert len(p) == 20_000 and p.i.dtype == np.int32 and p.z.dtype == np.uint8
    assert np.all(p.i != p.j)
    assert np.all(y[p.i] != y[p.j])
    assert np.array_equal(p.z, (y[p.i] > y[p.j]).astype(np.uint8))
    assert 0 <= p.i.min() and p.i.max() < len(y)


def test_pairs_determinism_by_seed():
    y = _labels()
    a, b, c = make_pairs(y, 5000, 7), make_pairs(y, 5000, 7), make_pairs(y, 5000, 8)
    assert np.array_equal(a.i, b.i) and np.array_equal(a.j, b.j)
    assert not np.array_equal(a.i, c.i)
    # A known value pins the sampler across machines and numpy versions.
    pinned = make_pairs(np.arange(10), 3, 0)
    assert pinned.i.tolist() == [8, 6, 2] and pinned.j.tolist() == [7, 8, 3]


def test_label_balance():
    # By symmetry of (i, j), half of the pairs say A > B; each index is used uniformly.
    y = _labels(5000)
    p = make_pairs(y, 200_000, 3)
    assert abs(p.z.mean() - 0.5) < 0.005
    counts = np.bincount(p.i, minlength=len(y))
    assert counts.min() > 0


def test_bad_arguments():
    with pytest.raises(DataError, match="relation"):
        make_pairs(_labels(), 10, 0, relation="lt")
    with pytest.raises(DataError, match="two distinct"):
        make_pairs(np.zeros(10, int), 10, 0)


def test_save_load_and_provenance(tmp_path):
    y = _labels()
    p = make_pairs(y, 1000, 0)
    p = type(p)(p.i, p.j, p.z, dict(p.meta, split="train", dataset_sha256="abc"))
    path = tmp_path / "p.npz"
    save_pairs(path, p)
    q = load_pairs(path, {"split": "train", "dataset_sha256": "abc"})
    assert np.array_equal(q.i, p.i) and q.meta["seed"] == 0
    with pytest.raises(ProvenanceError, match="split='train'"):
        load_pairs(path, {"split": "val"})
    with pytest.raises(ProvenanceError, match="dataset_sha256"):
        load_pairs(path, {"dataset_sha256": "other"})


def test_corrupt_pair_file(tmp_path):
    path = tmp_path / "p.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a valid relcomp pair file"):
        load_pairs(path)
    with pytest.raises(DataError, match="not found"):
        load_pairs(tmp_path / "none.npz")


@pytest.mark.mnist
def test_mnist_pairs_cached_and_checked(mnist, tmp_path):
    p = mnist_pairs(mnist, "val", 2000, seed=5, data_dir=tmp_path)
    f = pair_file(tmp_path, "val", 2000, 5)
    assert f.exists() and p.meta["dataset_sha256"] == mnist.sha256 and p.meta["split"] == "val"
    y = mnist.val.labels
    assert np.array_equal(p.z, (y[p.i] > y[p.j]).astype(np.uint8))
    again = mnist_pairs(mnist, "val", 2000, seed=5, data_dir=tmp_path)
    assert np.array_equal(again.i, p.i)
    # a file built from another split under this name is refused by load_pairs...
    with pytest.raises(ProvenanceError):
        load_pairs(f, {"split": "test"})
    # ...and the cache rebuilds a corrupt file instead of using it
    f.write_bytes(b"junk")
    assert np.array_equal(mnist_pairs(mnist, "val", 2000, seed=5, data_dir=tmp_path).i, p.i)
