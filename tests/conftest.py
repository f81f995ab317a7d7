"""Shared fixtures. Real-MNIST tests use a session cache: ``$RELCOMP_DATA_DIR`` when set, else a
temp folder filled from ``../shared/data/mnist`` where it exists (CI), else fetched as a user would."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


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
