import numpy as np
import pytest
import torch

from conftest import mnist_cfg
from relcomp.engine import train
from relcomp.errors import ConfigError, DataError
from relcomp.fewshot import draw_shots, fewshot_eval, fit_heads, write_fewshot


def test_draw_shots():
    y = np.repeat(np.arange(10), 5)
    idx = draw_shots(y, 3, 10, seed=(0, 3, 1))
    assert len(idx) == 30 and np.array_equal(np.bincount(y[idx]), np.full(10, 3))
    assert np.array_equal(idx, draw_shots(y, 3, 10, seed=(0, 3, 1)))
    assert not np.array_equal(idx, draw_shots(y, 3, 10, seed=(0, 3, 2)))
    with pytest.raises(DataError, match="fewer than"):
        draw_shots(y, 6, 10, seed=0)


def test_fit_heads_separates_separable_points():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 8, generator=g) * 5
    y = torch.arange(10).repeat(3)
    x = centers[y] + 0.1 * torch.randn(30, 8, generator=g)
    w, b = fit_heads(torch.stack([x, x]), torch.stack([y, y]), 10)
    assert w.shape == (2, 8, 10)
    pred = (torch.bmm(torch.stack([x, x]), w) + b).argmax(-1)
    assert (pred == y).all()


@pytest.mark.mnist
def test_fewshot_on_a_tiny_siamese_run(mnist, data_dir, tmp_path):
    cfg = mnist_cfg(model="siamese", pairs="4000", samples=2000, train_subset=2000, val_subset=500, val_pairs=1000,
                      precision="fp32", progress=False, data_dir=str(data_dir))
    train(cfg, tmp_path / "s")
    r = fewshot_eval(tmp_path / "s", shots=[1, 3], draws=4)
    assert not (tmp_path / "s" / "fewshot.json").exists()  # computing writes nothing
    write_fewshot(tmp_path / "s", r)
    for k in ("1", "3"):
        s = r["shots"][k]
        assert s["n"] == 4 and len(s["accuracies"]) == 4
        assert s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0
        assert s["mean"] > 0.15  # above chance even from a barely trained backbone
        assert np.array(s["confusion_matrix"]).sum() == 4 * 10_000
    assert (tmp_path / "s" / "fewshot.json").exists() and (tmp_path / "s" / "confusion-3shot.png").exists()
    with pytest.raises(ConfigError):
        fewshot_eval(tmp_path / "s", shots=[])
