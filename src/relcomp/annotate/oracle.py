"""A simulated annotator that judges through the page's HTTP API, as a person's browser would:
``GET /api/next``, then ``POST /api/judge`` with the outcome its labels give (a tie for equal
labels; each answer flipped with probability ``flip_rate``). For tests and for a study of the
whole loop (``relcomp annotate --simulate LABELS.csv``)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np


def call(url: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.split("?")[0].rstrip("/") + "/" + path + ("?" + url.split("?")[1] if "?" in url else ""),
                                 data, {"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def simulate(url: str, labels: dict[str, int], n: int, annotator: str = "oracle", flip_rate: float = 0.0,
             seed: int = 0, pause_s: float = 0.0, wait_for_version: dict[int, int] | None = None) -> dict[str, Any]:
    """Judge ``n`` pairs at ``url``; the latency of each ``/api/next`` (seconds) and what was judged.

    ``wait_for_version`` maps a judgement count to a model version to wait for before going on
    (a test's way to see rounds happen at known points; a person would simply keep judging)."""
    rng = np.random.default_rng(seed)
    latencies, judged, versions = [], 0, []
    while judged < n:
        for at, version in (wait_for_version or {}).items():
            if judged == at:
                deadline = time.monotonic() + 300
                while call(url, "api/status")[1]["version"] < version and time.monotonic() < deadline:
                    time.sleep(0.2)
        t = time.perf_counter()
        status, r = call(url, "api/next")
        latencies.append(time.perf_counter() - t)
        if status != 200 or r["pair"] is None:
            break
        a, b = r["pair"]
        la, lb = labels[a], labels[b]
        outcome = ">" if la > lb else "<" if la < lb else "="
        if outcome != "=" and rng.random() < flip_rate:
            outcome = "<" if outcome == ">" else ">"
        status, _ = call(url, "api/judge", {"a": a, "b": b, "outcome": outcome, "annotator": annotator})
        judged += status == 200
        versions.append(r["version"])
        if pause_s:
            time.sleep(pause_s)
    lat = np.array(latencies) * 1000
    return {"judged": judged, "next_ms_p50": float(np.percentile(lat, 50)), "next_ms_p99": float(np.percentile(lat, 99)),
            "versions_seen": sorted(set(versions))}
