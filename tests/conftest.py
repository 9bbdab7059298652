"""Shared test fixtures.

Real data lives in ``../shared/data`` next to the checkout (or wherever ``VAD_SHARED_DATA`` points); tests that need it
skip cleanly when it is absent, as it is in a user's clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set VAD_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    """The real UCSD Ped2 copy in the FFP layout (read-only)."""
    return _shared("ped2")


@pytest.fixture(scope="session")
def shared_labels() -> Path:
    """Folder of the real MNAD-format label files of Ped2, Avenue and ShanghaiTech (read-only)."""
    return _shared("labels")


@pytest.fixture(scope="session")
def vtest_avi() -> Path:
    """Real outdoor surveillance footage without labels (read-only)."""
    return _shared("vtest.avi")


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never reach the network from tests, never pick up a user's wandb login.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the folder says what a test is: tests/unit, tests/integration, tests/e2e (`-m unit` runs one kind)
    for item in items:
        kind = Path(item.fspath).parent.name
        if kind in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, kind))


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist every worker is a process of its own: one intra-op thread each avoids oversubscribing the
    # cores (torch's many small ops in the flow estimator slow down by orders of magnitude when threads contend).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
