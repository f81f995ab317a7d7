import json

import numpy as np
import pytest
import torch

from relcomp.bench import bench_pair_store, flops_per_pair, format_bench, naive_loss, run_bench
from relcomp.models import build_model
from relcomp.train import TrainConfig, _loss_and_correct, Data, pairs_to_device, to_tensor
from relcomp.data import make_pairs


def test_pair_store_bench_measures_real_files():
    r = bench_pair_store(20_000)
    assert r["pairs"] == 20_000
    # 4 + 4 + 1 bytes a pair plus the npz/zip headers and provenance
    assert 9 * 20_000 < r["pair_store_bytes"] < 9 * 20_000 + 10_000
    assert r["pair_images_bytes_uint8"] == 20_000 * 2 * 784
    assert r["pair_gen_s"] >= 0 and r["pair_load_s"] >= 0


def test_flops_per_pair_is_counted():
    # forward + backward of two images through the paper's CNN: about 70 MFLOP
    assert 50e6 < flops_per_pair("weak") < 90e6


@pytest.mark.parametrize("kind", ["siamese", "weak"])
def test_naive_and_fast_paths_compute_the_same_loss(kind):
    torch.manual_seed(0)
    model = build_model(kind).eval()  # no dropout: both paths must agree exactly
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = np.arange(64) % 10
    pairs = make_pairs(labels, 32, seed=0)
    x = to_tensor(images, torch.device("cpu"))
    data = Data(x, torch.from_numpy(labels), x, torch.from_numpy(labels), pairs, None)
    fast, _ = _loss_and_correct(model, TrainConfig(model=kind), data, torch.arange(32), pairs_to_device(pairs, torch.device("cpu")))
    naive = naive_loss(model, kind, x[torch.from_numpy(pairs.i).long()], x[torch.from_numpy(pairs.j).long()],
                       torch.from_numpy(pairs.z).float())
    assert torch.allclose(fast, naive, atol=1e-5)


@pytest.mark.mnist
def test_bf16_channels_last_learns_as_well_as_fp32(mnist, data_dir, tmp_path):
    from relcomp.train import train

    accs = {}
    for name, kw in {"fp32": dict(precision="fp32", channels_last=False),
                     "fast": dict(precision="bf16", channels_last=True)}.items():
        cfg = TrainConfig(model="weak", pairs="20000", samples=8000, train_subset=5000, val_subset=1000,
                          val_pairs=2000, eval_every=8000, progress=False, data_dir=str(data_dir), **kw)
        train(cfg, tmp_path / name, mnist=mnist)
        accs[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])["val_rel_acc"]
    assert accs["fp32"] > 0.8 and abs(accs["fp32"] - accs["fast"]) < 0.03, accs


@pytest.mark.mnist
def test_quick_bench_reports_every_key(data_dir):
    r = run_bench(quick=True, data_dir=str(data_dir), log=lambda m: None)
    for key in ("speedup_vs_naive", "mfu", "pairs_per_s", "pair_store_bytes_5m", "time_to_98_weak_s",
                "matmul_gflops_fp32", "matmul_gflops_bf16", "targets"):
        assert key in r, key
    assert r["pair_store_bytes_5m"] < 64_000_000
    for kind in ("siamese", "weak"):
        assert r["pairs_per_s"][kind]["fast"] > 0 and r["speedup_vs_naive"][kind] > 0
    assert set(r["targets"]) == {"speedup_vs_naive", "mfu", "pair_store_bytes_5m", "time_to_98_weak_s"}
    text = format_bench(r)
    assert "targets:" in text and "speedup" in text
    json.dumps(r)  # --json must be serialisable
