import gzip

import numpy as np
import pytest

from relcomp.data.idx import parse_idx, read_idx, read_idx_images, read_idx_labels, write_idx
from relcomp.errors import DataError


def _images(n=5):
    return np.arange(n * 28 * 28, dtype=np.uint8).reshape(n, 28, 28)


def test_roundtrip_raw_and_gz(tmp_path):
    imgs = _images()
    write_idx(tmp_path / "a", imgs)
    write_idx(tmp_path / "a.gz", imgs)
    assert np.array_equal(read_idx_images(tmp_path / "a", count=5), imgs)
    assert np.array_equal(read_idx_images(tmp_path / "a.gz"), imgs)
    labels = np.array([0, 9, 3], np.uint8)
    write_idx(tmp_path / "l", labels)
    out = read_idx_labels(tmp_path / "l")
    assert out.dtype == np.int64 and out.tolist() == [0, 9, 3]


def test_wrong_magic(tmp_path):
    p = tmp_path / "bad"
    write_idx(p, _images())
    b = bytearray(p.read_bytes())
    b[0] = 1
    p.write_bytes(bytes(b))
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)


def test_truncated(tmp_path):
    p = tmp_path / "t"
    write_idx(p, _images())
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t: truncated"):
        read_idx(p)


def test_trailing_bytes(tmp_path):
    p = tmp_path / "t"
    write_idx(p, _images())
    p.write_bytes(p.read_bytes() + b"xx")
    with pytest.raises(DataError, match="trailing"):
        read_idx(p)


def test_wrong_count(tmp_path):
    p = tmp_path / "imgs"
    write_idx(p, _images(3))
    with pytest.raises(DataError, match="expected 4 images, found 3"):
        read_idx_images(p, count=4)
    write_idx(tmp_path / "lab", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="expected 5 labels"):
        read_idx_labels(tmp_path / "lab", count=5)


def test_label_out_of_range(tmp_path):
    p = tmp_path / "lab"
    write_idx(p, np.array([1, 10, 2], np.uint8))
    with pytest.raises(DataError, match=r"label 10 at index 1"):
        read_idx_labels(p)


def test_wrong_rank_and_dtype(tmp_path):
    write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="images"):
        read_idx_images(tmp_path / "l")
    with pytest.raises(DataError, match="unknown IDX dtype"):
        parse_idx(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00")


def test_missing_and_bad_gzip(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x.gz")
    with gzip.open(tmp_path / "y.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "y.gz")
