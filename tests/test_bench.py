from relcomp.bench import bench_pair_store, format_bench, run_bench


def test_pair_store_bench_measures_real_files():
    r = bench_pair_store(20_000)
    assert r["pairs"] == 20_000
    # 4 + 4 + 1 bytes a pair plus the npz/zip headers and provenance
    assert 9 * 20_000 < r["pair_store_bytes"] < 9 * 20_000 + 10_000
    assert r["pair_images_bytes_uint8"] == 20_000 * 2 * 784
    assert r["pair_gen_s"] >= 0 and r["pair_load_s"] >= 0


def test_run_bench_quick_schema():
    r = run_bench(quick=True)
    assert {"pair_store_bytes_5m", "pair_gen_5m_s", "pair_store"} <= set(r)
    assert r["pair_store_bytes_5m"] < 64_000_000
    assert "5M pairs" in format_bench(r)
