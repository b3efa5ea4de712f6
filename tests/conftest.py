"""Shared fixtures and test tiers. Helpers live in tests/helpers.py (tiny files made in tmp_path,
never downloaded); test files import from there, never from each other.

Tiers: ``pytest -m "not slow"`` runs the core invariants in under a minute for the inner loop; the
README's ``python -m pytest -q`` runs everything. A test is slow when it starts real processes
(signals, kill-and-resume, torchrun, the sandboxed demo), trains, or searches many cases: whole
modules are listed in ``SLOW_MODULES``, single tests carry ``@pytest.mark.slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

SLOW_MODULES = {
    "test_bad_inputs.py",  # ~100 rows through the real command
    "test_kill_resume.py",  # real processes, SIGKILL/SIGINT/SIGTERM
    "test_demo_pipeline.py",  # the whole demo, sandboxed
    "test_sandbox.py",  # the sandbox harness itself, with real processes
    "test_train_distributed.py",  # torchrun with gloo
    "test_properties.py",  # hypothesis searches
    "test_trainer.py",  # trains and resumes
    "test_noise.py",  # the real command's whole stderr, one process per case
    "test_fault_injection.py",  # real processes under a file-size limit, damaged stores, two runs at once
    "test_bigwig_faults.py",  # writers under a file-size limit, in child processes
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def identity_cache(tmp_path_factory, monkeypatch):
    """Every test's file identities are cached in a folder of its own, never in the real
    ~/.cache/epiformer (set in the environment, so commands run as child processes see it too)."""
    folder = tmp_path_factory.mktemp("identity-cache")
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def random_seq():
    rng = np.random.default_rng(0)

    def make(length: int) -> str:
        return "".join(rng.choice(list("ACGT"), size=length))

    return make
