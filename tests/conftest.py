"""Shared test setup: one thread and fixed seeds, so every test is deterministic and cheap on 2 cores."""
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
HELPERS = REPO / "tests" / "helpers"  # importable test-only modules (workers import some of them by name)
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def repo_root() -> Path:
    return REPO
