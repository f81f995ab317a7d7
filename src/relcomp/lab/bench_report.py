"""What ``relcomp bench`` prints and what its README / docs block says: the measured figures
beside their targets (:func:`relcomp.lab.bench.run_bench` measures them)."""
from __future__ import annotations

from typing import Any

from .bench_compare import speed
from .throughput import ABLATIONS


def peak_lines(r: dict[str, Any]) -> list[str]:
    # the start's peak is one of the samples where the file has its speed probes (before them, not)
    n_samples = len(r.get("peak_gflops_samples", {}).get("fp32", [])) + ("speed_probes" not in r)
    lines = [f"matmul peak (measured; the best of {n_samples} samples over the bench): fp32 {r['matmul_gflops_fp32']:.0f} GFLOP/s, bf16 "
             + (f"{r['matmul_gflops_bf16']:.0f} GFLOP/s" if r["matmul_gflops_bf16"] else "not native on this CPU "
                "(relcomp trains in fp32 here; MFU is of the fp32 peak)")]
    phases = list(dict.fromkeys(p["phase"] for p in r.get("speed_probes", [])))
    if phases:
        dtype = "bf16" if r["matmul_gflops_bf16"] else "fp32"
        lines.append(f"the machine's speed beside each part (the median {dtype} matmul sample; "
                     "`relcomp bench --compare` divides by it): "
                     + ", ".join(f"{phase} {speed(r, dtype, phase):.0f}" for phase in phases) + " GFLOP/s")
    n = r.get("nominal_peak")
    if n:
        lines.append(f"nominal peak: {n['cores']} cores x {n['mhz']:.0f} MHz (as /proc/cpuinfo says) x "
                     f"{n['fp32_flop_per_cycle']} fp32 / {n['bf16_flop_per_cycle']} bf16 FLOP/cycle ({n['basis']}) "
                     f"= {n['gflops_fp32']:.0f} / {n['gflops_bf16']:.0f} GFLOP/s")
    else:
        lines.append("nominal peak: not derived for this CPU (its FLOP/cycle is not in relcomp's table)")
    return lines


def num(v: float | None, spec: str = ".0f") -> str:
    return "n/a" if v is None else format(v, spec)


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"relcomp bench ({'quick' if r['quick'] else 'full'}; torch {r['torch']}, {r['threads']} threads)",
             *peak_lines(r), "training throughput (pairs/s):",
             f"  {'model':<8} {'naive':>7} {'naive+bf16':>10} {'+gather':>8} {'+bf16':>7} {'+NHWC':>7} {'speedup':>8} "
             f"{'GFLOP/s':>8} {'MFU':>6} {'MFU nominal':>11}",
             "  (naive: image-pair Dataset + DataLoader, fp32, two backbone calls; naive+bf16: the same with bf16 "
             "autocast; +gather: index gathers from one float tensor, one batched backbone call, fp32; +bf16: "
             "autocast; +NHWC: channels-last = relcomp's default; speedup: +NHWC over naive; MFU: of the measured "
             "matmul peak; MFU nominal: of the nominal peak)"]
    for k, v in r["pairs_per_s"].items():
        lines.append(f"  {k:<8} {v['naive']:>7.0f} {num(v.get('naive_bf16')):>10} {v['gather_fp32']:>8.0f} "
                     f"{num(v['gather_bf16']):>7} {v['fast']:>7.0f} {r['speedup_vs_naive'][k]:>7.2f}x "
                     f"{r['model_gflops'][k]:>8.1f} {r['mfu'][k]:>6.3f} {num(r.get('mfu_nominal', {}).get(k), '.3f'):>11}")
    if r.get("pairs_per_s_spread"):
        least = f" and {r['window_s']:g} s" if r.get("window_s") else ""
        how = "fastest" if "pairs_per_s_median" in r else "median"  # results files before the fastest window
        lines.append(f"  (each the {how} of {r['windows']} windows of at least {r['window_steps']} steps{least}, the paths "
                     "taking turns; "
                     f"spread of the {r['windows']} windows, (max - min) / {'max' if how == 'fastest' else 'median'}:")
        lines += [f"   {k}: " + ", ".join(f"{path} {x:.0%}" for path, x in v.items()) for k, v in r["pairs_per_s_spread"].items()]
        lines.append("   matmul peak right before each model: "
                     + ", ".join(f"{k} {g:.0f} GFLOP/s" for k, g in r["peak_gflops_before"].items())
                     + (f"; the MFU is of the best, {r['mfu_peak_gflops']:.0f} GFLOP/s)" if "mfu_peak_gflops" in r else ")"))
    if r.get("ablations"):
        lines.append("ablations of the fast path (+NHWC), pairs/s; each alone, none kept:")
        for k, v in r["ablations"].items():
            lines.append(f"  {k:<8} default {r['pairs_per_s'][k]['fast']:.0f}; "
                         + "; ".join(f"{name} {x:.0f} ({x / r['pairs_per_s'][k]['fast']:.2f}x)" for name, x in v.items()))
        lines += [f"  {name}: {text}" for name, text in ABLATIONS.items()]
    lines.append(f"model FLOPs per training pair: {r['model_flops_per_pair'] / 1e6:.1f} M")
    lines.append(f"weak with the class-balance term on 64 unlabeled images per step (the default): "
                 f"{r['pairs_per_s']['weak']['with_unlabeled']:.0f} pairs/s, {r['unlabeled_slowdown']:.2f}x the time")
    lines.append(f"suggest 1,000 pairs among the {'first 5k (quick)' if r.get('quick') else '50k'} MNIST train images: "
                 f"{r['suggest_1000_s']:.1f} s")
    s = r["pair_store"]
    lines.append(f"5M pair store: {r['pair_store_bytes_5m'] / 1e6:.1f} MB (as uint8 images: "
                 f"{r['images_bytes_5m_uint8'] / 1e9:.2f} GB); sampled in {r['pair_gen_5m_s']:.2f} s "
                 f"(measured on {s['pairs']:,})")
    for key, label in (("time_to_98_weak", "weak model to 98% val classification"),
                       ("time_to_97_siamese_1shot", "Siamese 1-shot mean to 97% val")):
        h = r[key]
        if h["reached"]:
            lines.append(f"time to accuracy, {label}: {h['time_s']:.1f} s of training ({h['samples']:,} pairs)")
        else:
            lines.append(f"time to accuracy, {label}: not reached in {h['cap_samples']:,} pairs "
                         f"({h['train_time_s']:.0f} s); best {h['best']:.4f}")
    if r.get("load_avg"):
        lines.append(f"load average (1 min) before the bench {r['load_avg']['before']}, after "
                     f"{r['load_avg'].get('after')}, on {r['load_avg']['cores']} cores")
    lines.append("targets (speedup and MFU: the worse of the two models):")
    for key, t in r["targets"].items():
        status = "met" if t["met"] else "NOT met"
        by = "" if t["ratio"] is None else f" ({t['ratio']:.2f} of target)"
        lines.append(f"  {key:<22} target {t['target']:<12g} measured {t['measured']}{by}: {status}")
    return "\n".join(lines)


def markdown(r: dict[str, Any], figure_dir: str = "figures") -> str:
    """The README/doc block of a committed bench results file: its provenance and the output whole."""
    m = r.get("machine", {})
    head = (f"`{r.get('command', 'relcomp bench')}`, relcomp {r.get('relcomp')}, {r.get('date')}; {m.get('cpu')}, "
            f"{m.get('cores')} cores, torch {r['torch']}; {r.get('wall_time_s', 0):.0f} s wall time. Its output, whole:")
    return "\n".join([head, "", "```", format_bench(r), "```"])
