"""#31: the throughput paths of `relcomp bench` alone (naive fp32 against the fast bf16 path, and the bf16
matmul peak), for comparing two source trees back to back: `PYTHONPATH=TREE/src python scripts/bench_paths.py`
(MNIST in /tmp/relcomp-data). Prints one JSON line."""
import json, os, sys, time, torch
try:
    from relcomp.lab import bench as B
except ImportError:
    from relcomp import bench as B
from relcomp.data.mnist import load_mnist
import relcomp
m = load_mnist("/tmp/relcomp-data")
r = {"src": relcomp.__file__.split("/src/")[0], "load_before": round(os.getloadavg()[0], 2)}
r["matmul_bf16"] = round(B.matmul_gflops(torch.bfloat16, seconds=2.0), 1)
for model in ("siamese", "weak"):
    naive = B.throughput(model, "naive", 40, m.train.images, m.train.labels)
    fast = B.throughput(model, "fast", 40, m.train.images, m.train.labels, precision="bf16", channels_last=True)
    r[model] = {"naive": round(naive, 1), "fast": round(fast, 1), "speedup": round(fast / naive, 2)}
print(json.dumps(r), flush=True)
