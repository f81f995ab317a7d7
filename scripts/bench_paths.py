"""#31: the throughput paths of `relcomp bench` alone (naive fp32 against the fast bf16 path, and the bf16
matmul peak), for comparing two source trees back to back: `PYTHONPATH=TREE/src python scripts/bench_paths.py`
(MNIST in /tmp/relcomp-data). Prints one JSON line. A tree with `relcomp.lab.throughput` times each path as
the median of its windows; an older tree, one 40-step window."""
import json
import os

import torch

import relcomp
from relcomp.data.mnist import load_mnist

try:
    from relcomp.lab import bench as B
except ImportError:
    from relcomp import bench as B
try:
    from relcomp.lab import throughput as T
except ImportError:
    T = B

m = load_mnist("/tmp/relcomp-data")
r = {"src": relcomp.__file__.split("/src/")[0], "load_before": round(os.getloadavg()[0], 2)}
r["matmul_bf16"] = round(B.matmul_gflops(torch.bfloat16, seconds=2.0), 1)
for model in ("siamese", "weak"):
    naive = T.throughput(model, "naive", 40, m.train.images, m.train.labels)
    fast = T.throughput(model, "fast", 40, m.train.images, m.train.labels, precision="bf16", channels_last=True)
    r[model] = {"naive": round(naive, 1), "fast": round(fast, 1), "speedup": round(fast / naive, 2)}
print(json.dumps(r), flush=True)
