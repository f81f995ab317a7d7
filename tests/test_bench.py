import json
import sys

import numpy as np
import pytest
import torch

from conftest import mnist_cfg
from relcomp.data import make_pairs
from relcomp.data.splits import Data, to_tensor
from relcomp.engine import train
from relcomp.lab.bench import TARGETS, bench_pair_store, nominal_peak, run_bench
from relcomp.lab.bench_report import format_bench
from relcomp.lab.throughput import AmaxPool2, best_and_spread, flops_per_pair, naive_loss
from relcomp.losses import get_loss
from relcomp.models import build_model


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


@pytest.mark.parametrize("kind", ["siamese", "weak", "ranker"])
def test_naive_and_fast_paths_compute_the_same_loss(kind):
    torch.manual_seed(0)
    model = build_model(kind).eval()  # no dropout: both paths must agree exactly
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    labels = np.arange(64) % 10
    pairs = make_pairs(labels, 32, seed=0)
    x = to_tensor(images, torch.device("cpu"))
    data = Data(x, torch.from_numpy(labels), x, torch.from_numpy(labels), pairs, None)
    inputs, target, weight = data.batch(torch.arange(32))  # what the engine's train_step feeds the model
    fast = get_loss("unconditional")(model(*inputs), target, weight)
    naive = naive_loss(model, x[torch.from_numpy(pairs.i).long()], x[torch.from_numpy(pairs.j).long()],
                       torch.from_numpy(pairs.z).float())
    assert torch.allclose(fast, naive, atol=1e-5)


@pytest.mark.mnist
@pytest.mark.slow
def test_fast_path_learns_as_well_as_fp32(mnist, data_dir, tmp_path):
    accs = {}
    # "fast": what `relcomp train` runs on this machine (bf16 + NHWC where the CPU has bf16, else fp32 + NHWC)
    for name, kw in {"fp32": dict(precision="fp32", channels_last=False),
                     "fast": dict(precision="auto", channels_last=True)}.items():
        cfg = mnist_cfg(model="weak", pairs="20000", samples=8000, train_subset=5000, val_subset=1000,
                          val_pairs=2000, eval_every=8000, progress=False, data_dir=str(data_dir), **kw)
        train(cfg, tmp_path / name)
        accs[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])["val_rel_acc"]
    assert accs["fp32"] > 0.8 and abs(accs["fp32"] - accs["fast"]) < 0.03, accs


@pytest.mark.mnist
@pytest.mark.slow
def test_quick_bench_targets_are_computed_from_the_measurements(data_dir):
    r = run_bench(quick=True, data_dir=str(data_dir), log=lambda m: None)
    for key in ("speedup_vs_naive", "mfu", "pairs_per_s", "pair_store_bytes_5m", "time_to_98_weak_s",
                "matmul_gflops_fp32", "matmul_gflops_bf16", "targets"):
        assert key in r, key
    assert r["pair_store_bytes_5m"] < 64_000_000
    for kind in ("siamese", "weak"):
        v = r["pairs_per_s"][kind]
        assert r["speedup_vs_naive"][kind] == round(v["fast"] / v["naive"], 2)
        # of the best matmul peak the bench measured (at its start, and right before each model's paths)
        peaks = [*r["peak_gflops_before"].values(), r["matmul_gflops_bf16"] or r["matmul_gflops_fp32"]]
        assert r["mfu"][kind] == round(r["model_gflops"][kind] / max(peaks), 3)
        # the fastest window, the median and the spread, for every path
        assert set(r["pairs_per_s_spread"][kind]) >= {k for k, x in v.items() if x is not None}
        assert all(r["pairs_per_s_median"][kind][k] <= x + 0.1 for k, x in v.items() if x is not None)
        assert all(x >= 0 for x in r["pairs_per_s_spread"][kind].values())
    t = r["targets"]
    assert set(t) == set(TARGETS)
    assert t["speedup_vs_naive"]["measured"] == min(r["speedup_vs_naive"].values())
    assert t["speedup_vs_naive"]["met"] == (t["speedup_vs_naive"]["measured"] >= TARGETS["speedup_vs_naive"])
    assert t["pair_store_bytes_5m"]["met"] and t["pair_store_bytes_5m"]["measured"] == r["pair_store_bytes_5m"]
    assert t["pair_store_bytes_5m"]["ratio"] == round(r["pair_store_bytes_5m"] / TARGETS["pair_store_bytes_5m"], 3)
    # 3,000 pairs cannot reach 98%: the quick bench must say so, not claim it
    assert t["time_to_98_weak_s"]["met"] is False and r["time_to_98_weak"]["reached"] is False
    assert r["time_to_98_weak"]["times_s"] == [None]  # the quick bench runs each once; the full one, the faster of two
    w = r["pairs_per_s"]["weak"]
    assert r["unlabeled_slowdown"] == pytest.approx(w["fast"] / w["with_unlabeled"], abs=0.002)  # of unrounded rates
    assert t["unlabeled_slowdown"]["met"] == (r["unlabeled_slowdown"] <= TARGETS["unlabeled_slowdown"])
    assert t["suggest_1000_s"]["measured"] == r["suggest_1000_s"] > 0
    text = format_bench(r)
    assert "targets (speedup and MFU: the worse of the two models):" in text and "suggest 1,000 pairs" in text
    assert t["mfu"]["measured"] == min(r["mfu"].values())  # both targets judged on the same (worse) model
    if r["precision"] == "bf16":  # the naive path in bf16 too: layout and precision measured apart
        assert all(v["naive_bf16"] > 0 for v in r["pairs_per_s"].values())
    assert r["windows"] == 2 and set(r["load_avg"]) == {"cores", "before", "after"}
    assert "each the fastest of 2 windows" in text and "spread of the 2 windows" in text and "load average" in text
    json.dumps(r)  # --json must be serialisable


def test_a_path_is_its_windows_median_and_their_spread():
    assert best_and_spread([100.0, 90.0, 120.0, 95.0, 110.0]) == (120.0, 0.25)


def test_nominal_peak_is_cores_times_clock_times_flop_per_cycle():
    zen4 = {"vendor_id": "AuthenticAMD", "cpu family": "25", "cpu MHz": "2596.148"}
    n = nominal_peak(cores=2, facts=zen4)
    assert n["gflops_fp32"] == round(2 * 2596.148 * 32 / 1e3, 1) and n["gflops_bf16"] == round(2 * 2596.148 * 64 / 1e3, 1)
    # an unknown core or clock is not guessed
    assert nominal_peak(cores=2, facts={**zen4, "vendor_id": "GenuineIntel"}) is None
    assert nominal_peak(cores=2, facts={"vendor_id": "AuthenticAMD", "cpu family": "25"}) is None


def test_amax_pool_ablation_computes_max_pooling():
    x = torch.randn(3, 4, 14, 14)
    assert torch.equal(AmaxPool2()(x), torch.nn.functional.max_pool2d(x, 2))


def test_the_compile_ablation_builds_its_step():
    """`relcomp bench --ablations` hands the trainer a torch.compile'd model, which has no truth
    value (its len() raises): building the step must not ask for one (compilation is lazy)."""
    from relcomp.lab.throughput import path_step

    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    assert callable(path_step("weak", "fast", 2, images, np.arange(64) % 10, batch=8, ablation="compile"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_keeps_freed_memory_where_glibc_runs_the_process():
    from relcomp.utils import keep_freed_memory

    # glibc answers 1 for each setting it took; the bench records the answer
    assert keep_freed_memory() is True


def test_the_fastest_time_to_accuracy_is_the_fastest_run_reached_or_not():
    from relcomp.lab.bench import fastest

    miss = [{"reached": False, "time_s": None, "train_time_s": t} for t in (190.0, 150.0, 170.0)]
    assert fastest(miss)["train_time_s"] == 150.0 and fastest(miss)["train_times_s"] == [190.0, 150.0, 170.0]
    hits = [*miss, {"reached": True, "time_s": 60.0, "train_time_s": 200.0},
            {"reached": True, "time_s": 50.0, "train_time_s": 210.0}]
    assert fastest(hits)["time_s"] == 50.0  # a run that reached the target beats any that did not
