"""The multi-process tests reuse the browser tests' Chromium fixtures, and share one way
to run a cluster: each test module says how its cluster differs (``cluster_env``,
``cluster_size``) and gets one for the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TINY_MODEL_DIR
from tests.e2e.conftest import browser, page
from tests.scaleout.cluster import Cluster
from tests.tiny_model import save_tiny_model

__all__ = ["browser", "page"]


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """Settings the module's processes run with, beyond the tiny model."""
    return {}


@pytest.fixture(scope="module")
def cluster_size() -> tuple[int, int]:
    """How many web processes and generation workers the module's cluster runs."""
    return (1, 1)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_env: dict[str, str], cluster_size: tuple[int, int]
) -> Iterator[Cluster]:
    """Redis, a PostgreSQL database, web processes and workers on the tiny model, stopped
    after the module; sockets check on their replies every second."""
    save_tiny_model(TINY_MODEL_DIR)
    env = {"INFERENCE_MODEL": str(TINY_MODEL_DIR), "CHAT_SOCKET_WATCH_SECONDS": "1", **cluster_env}
    webs, workers = cluster_size
    running = Cluster(tmp_path_factory.mktemp("cluster"), extra_env=env).start(webs=webs, workers=workers)
    yield running
    running.stop()
