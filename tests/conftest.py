"""Shared fixtures. Real-MNIST tests use a session cache: ``$RELCOMP_DATA_DIR`` when set, else a
temp folder filled from ``../shared/data/mnist`` where it exists (CI), else fetched as a user would."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in one worker per core (pytest-xdist): each worker, and every
    # process it starts, then computes in one thread instead of all of them contending for every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The slow tests first (in their files' order), so that the workers of `make test` do not
    end waiting on one long test begun last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_configure(config):
    """`--dist loadgroup` keeps a module with a shared fixture in one worker by an ``@group`` suffix
    that pytest-xdist writes into each item's node id. From pytest 9.2 that write is lost
    (pytest-xdist issue 1386): nothing fails, but each module fixture is built once per worker and
    the suite runs some minutes longer. Refuse, with the fix, until xdist supports it."""
    from packaging.version import Version

    if config.getoption("dist", "no") == "loadgroup" and Version(pytest.__version__) >= Version("9.2"):
        raise pytest.UsageError(f"pytest {pytest.__version__} breaks --dist loadgroup (pytest-xdist issue 1386); "
                                "install the dev extra's pytest: pip install 'pytest<9.2'")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    env = os.environ.get("RELCOMP_DATA_DIR")
    d = Path(env) if env else tmp_path_factory.mktemp("relcomp-data")
    from relcomp.data.mnist import fetch_mnist

    fetch_mnist(d, from_dir=SHARED if SHARED.exists() else None, quiet=True)
    return d


@pytest.fixture(scope="session")
def mnist(data_dir):
    from relcomp.data import load_mnist

    return load_mnist(data_dir)


def write_user_data(root: Path, images, labels, n_comparisons: int, seed: int = 0, n_labelled: int | None = None,
                    fmt: str = "png") -> dict[str, Path]:
    """A user's data on disk from labelled images: an image folder (PNG in two subfolders) or a
    .npy array, a comparisons CSV (outcomes written in all three spellings, with annotator and
    weight columns) and a labels CSV for the first ``n_labelled`` items."""
    import csv

    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        folder = root / "images"
        names = []
        for k, img in enumerate(images):
            name = f"{'ab'[k % 2]}/img{k:05d}.png"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / name)
            names.append(name)
    else:
        folder = root / "images.npy"
        np.save(folder, images)
        names = [str(k) for k in range(len(images))]
    rng = np.random.default_rng(seed)
    rows, spell = [], [("1", "0"), (">", "<"), ("a", "b")]
    while len(rows) < n_comparisons:
        i, j = rng.integers(0, len(images), 2)
        if i == j or labels[i] == labels[j]:
            continue
        greater = labels[i] > labels[j]
        rows.append([names[i], names[j], spell[len(rows) % 3][0 if greater else 1], f"ann{len(rows) % 4}", "1.0"])
    comp = root / "comparisons.csv"
    with open(comp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "outcome", "annotator", "weight"])
        w.writerows(rows)
    lab = root / "labels.csv"
    with open(lab, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "label"])
        w.writerows([names[k], int(labels[k])] for k in range(n_labelled if n_labelled is not None else len(names)))
    return {"images": folder, "comparisons": comp, "labels": lab}


def mnist_cfg(**kw):
    """A TrainConfig on MNIST from flat keywords: the MnistSource fields go into ``data``."""
    import dataclasses

    from relcomp.config import TrainConfig
    from relcomp.data.sources import MnistSource

    names = {f.name for f in dataclasses.fields(MnistSource)}
    data = MnistSource(**{k: kw.pop(k) for k in list(kw) if k in names})
    return TrainConfig(**kw, data=data)


def write_digit_photos(folder: Path, mnist, n: int = 300) -> tuple[dict[str, int], list[int]]:
    """A user's photos as the README's examples name them: ``folder/0000.png`` ... , the first
    ``n`` MNIST train digits 0-4 (five grades); their labels by file name (never shown to relcomp)
    and the train indices they came from."""
    import numpy as np
    from PIL import Image

    keep = np.flatnonzero(mnist.train.labels < 5)[:n]
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for k, idx in enumerate(keep):
        name = f"{k:04d}.png"
        Image.fromarray(mnist.train.images[idx]).save(folder / name)
        labels[name] = int(mnist.train.labels[idx])
    return labels, keep.tolist()
