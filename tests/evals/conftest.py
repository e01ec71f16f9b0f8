"""Shared by the reference-parity modules (TensorFlow, pytorch-fid, torch-fidelity)."""
from __future__ import annotations

import os

import pytest


def _unavailable(reason: str, stderr: str | None = None):
    """Skip a reference test for `reason` (plus the last line of `stderr`, where the reference
    subprocess said why); under REPRO_REQUIRE_REFERENCES=1 (CI) fail instead."""
    if stderr is not None:
        lines = stderr.strip().splitlines()
        reason = f"{reason}{lines[-1] if lines else '(no message)'}"
    if os.environ.get("REPRO_REQUIRE_REFERENCES") == "1":
        pytest.fail(f"REPRO_REQUIRE_REFERENCES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def references_unavailable():
    return _unavailable
