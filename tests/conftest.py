"""Shared fixtures: real models fetched once into the store (a shared cache under the data dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.models.store import fetch
from quantization.catalog import load_catalog

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TRACES = FIXTURES / "traces"


def fixture_file(*parts: str) -> Path:
    """A file under tests/fixtures; a missing one fails the test (data is never optional)."""
    path = FIXTURES.joinpath(*parts)
    assert path.is_file(), f"test data missing: {path}"
    return path


def trace_files(session: str) -> list[Path]:
    """A captured agent session's request bodies, in order; never empty."""
    files = sorted((TRACES / session).glob("*.json"))
    assert files, f"no trace files in {TRACES / session}"
    return files


def real_model_path(name: str) -> Path:
    model = load_catalog().get(name)
    assert model is not None, name
    return fetch(model, model.artifacts[0], log=lambda *_: None)


@pytest.fixture(scope="session")
def qwen_path() -> Path:
    return real_model_path("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    return real_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return real_model_path("gemma-3-270m")
