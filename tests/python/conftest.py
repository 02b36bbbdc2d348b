"""Shared fixtures for the parity tests: the nibble binary, the default model, shared data."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _nibble_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("NIBBLE_HOME", pathlib.Path.home() / ".cache" / "nibble"))


@pytest.fixture(scope="session")
def nibble_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("NIBBLE_BIN", REPO / "build" / "release" / "nibble"))
    if not path.exists():
        pytest.fail(f"nibble binary not found at {path}; build first or set NIBBLE_BIN")
    return path


@pytest.fixture(scope="session")
def default_gguf() -> pathlib.Path:
    path = _nibble_home() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        pytest.fail(f"default model missing at {path}; run scripts/setup.sh")
    return path


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("NIBBLE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.exists():
        pytest.fail(f"shared data not found at {path}; set NIBBLE_SHARED_DATA")
    return path
