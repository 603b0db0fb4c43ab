"""Fixtures of the fault-injection tests: one tiny probe per session, a fresh folder per test."""

from __future__ import annotations

import pytest

from divcoef_assets_tests.conftest import save_tiny_gpt2


@pytest.fixture(scope="session")
def small_probe_dir(tmp_path_factory):
    """2 layers, n_embd 8, 16 positions, GPT-2's vocabulary: the cheapest probe the GPT-2 tokenizer fits."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("small-gpt2"), n_embd=8, n_positions=16)
