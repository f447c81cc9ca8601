"""Shared fixtures. Run from the repository (tests/python_binding.rs does):

    KILN_LIBRARY=target/release/libkiln.so python3 -m pytest bindings/python/tests

The package is imported from bindings/python/src unless KILN_TEST_INSTALLED=1 (then: the installed one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
if os.environ.get("KILN_TEST_INSTALLED") != "1":
    sys.path.insert(0, str(HERE.parent / "src"))
if not os.environ.get("KILN_LIBRARY"):
    os.environ["KILN_LIBRARY"] = str(ROOT / "target" / "release" / "libkiln.so")

import kiln  # noqa: E402


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def runtime() -> Iterator[kiln.Runtime]:
    with kiln.Runtime() as rt:
        yield rt


@pytest.fixture(scope="session")
def model(runtime: kiln.Runtime) -> Iterator[kiln.Model]:
    """The tiny random-weight test model (64x64)."""
    with runtime.load_model(ROOT / "tests" / "fixtures" / "tiny-sd") as m:
        yield m
