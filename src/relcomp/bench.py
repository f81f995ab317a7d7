"""``relcomp bench``: measured speed and size figures, never assumed ones.

Now: the pair store (time to sample the paper's 5M train pairs, and their bytes on disk as
relcomp stores them vs as the original code's uint8 image copies).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def bench_pair_store(n: int = 5_000_000, seed: int = 42) -> dict[str, Any]:
    """Sample ``n`` pairs from 50k MNIST-like labels, save them, and measure time and bytes."""
    from .data.pairs import load_pairs, make_pairs, save_pairs

    labels = np.random.default_rng(0).integers(0, 10, 50_000)  # the sampler only sees labels
    t = time.perf_counter()
    pairs = make_pairs(labels, n, seed)
    gen_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "pairs.npz"
        t = time.perf_counter()
        save_pairs(path, pairs)
        save_s = time.perf_counter() - t
        size = path.stat().st_size
        t = time.perf_counter()
        load_pairs(path)
        load_s = time.perf_counter() - t
    return {"pairs": n, "pair_gen_s": round(gen_s, 3), "pair_save_s": round(save_s, 3),
            "pair_load_s": round(load_s, 3), "pair_store_bytes": size,
            "pair_images_bytes_uint8": n * 2 * 28 * 28, "pair_images_bytes_float32": n * 2 * 28 * 28 * 4}


def run_bench(quick: bool = False) -> dict[str, Any]:
    n = 500_000 if quick else 5_000_000
    store = bench_pair_store(n)
    scale = 5_000_000 / n
    return {"pair_store": store, "pair_store_bytes_5m": int(store["pair_store_bytes"] * scale) if quick
            else store["pair_store_bytes"], "pair_gen_5m_s": round(store["pair_gen_s"] * scale, 3)}


def format_bench(r: dict[str, Any]) -> str:
    s = r["pair_store"]
    return "\n".join([
        f"pair store ({s['pairs']:,} pairs)",
        f"  sample: {s['pair_gen_s']:.2f} s   save: {s['pair_save_s']:.2f} s   load: {s['pair_load_s']:.2f} s",
        f"  on disk: {s['pair_store_bytes'] / 1e6:.1f} MB   as uint8 images: {s['pair_images_bytes_uint8'] / 1e9:.2f} GB"
        f"   as float32 images: {s['pair_images_bytes_float32'] / 1e9:.1f} GB",
        f"  5M pairs: {r['pair_store_bytes_5m'] / 1e6:.1f} MB (target <= 64 MB), sampled in {r['pair_gen_5m_s']:.2f} s "
        "(target < 10 s)",
    ])


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure speed and size figures (pair store)",
                       description="Measure, on this machine, the time to sample the paper's 5M train pairs and "
                       "their size on disk as relcomp stores them, beside the original image-copy layout.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="measure on 500k pairs and scale to 5M")


def cmd_bench(args) -> int:
    r = run_bench(quick=args.quick)
    print(json.dumps(r) if args.json else format_bench(r))
    return 0
