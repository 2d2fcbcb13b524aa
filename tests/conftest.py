"""Shared test setup: offline, batch-mode progress bars, headless plots, few threads, a private cache."""
from __future__ import annotations

import os

os.environ.setdefault("VLMLAB_BATCH", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("VLMLAB_THREADS", "2")        # the test machine is shared; kernels inherit this
os.environ.setdefault("OMP_NUM_THREADS", os.environ["VLMLAB_THREADS"])

import pytest  # noqa: E402

from vlmlab import runtime  # noqa: E402

runtime.set_threads()


@pytest.fixture(scope="session", autouse=True)
def _vlmlab_cache(tmp_path_factory):
    """Point VLMLAB_CACHE at a session temporary folder unless the caller set one."""
    if "VLMLAB_CACHE" in os.environ:
        yield runtime.cache_root()
        return
    path = tmp_path_factory.mktemp("vlmlab_cache")
    os.environ["VLMLAB_CACHE"] = str(path)
    yield path
    os.environ.pop("VLMLAB_CACHE", None)
