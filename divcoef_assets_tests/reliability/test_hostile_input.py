"""Hostile or careless input fails early, with an error that names the file, entry or setting and
says what to do. Nothing here computes an embedding or trains a probe: every case is refused (or
accepted) before any work starts."""

from __future__ import annotations

import math

import pytest

from divcoef_assets.core.config import ProbeConfig

# ----------------------------------------------------------------------------- 1. ProbeConfig


@pytest.mark.parametrize("field", ["lr", "adam_eps", "weight_decay", "target_half_width"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_probe_config_refuses_non_finite_numbers(field, value):
    with pytest.raises(ValueError, match=rf"invalid probe config 'p': {field} must be a finite non-negative number"):
        ProbeConfig(name="p", **{field: value})


def test_probe_config_device_must_be_a_known_form():
    for device in ("tpu9", "gpu", "cuda:", "cuda:x", "CPU", "cuda:0 ", ""):
        with pytest.raises(ValueError, match=r"device must be one of cpu, auto, cuda, cuda:N, mps") as caught:
            ProbeConfig(name="p", device=device)
        assert repr(device) in str(caught.value)
    for device in ("cpu", "auto", "cuda", "cuda:0", "cuda:12", "mps"):
        assert ProbeConfig(name="p", device=device).device == device


@pytest.mark.parametrize("seq_len", [1, 4, 7])
def test_probe_config_refuses_seq_len_below_8(seq_len):
    with pytest.raises(ValueError, match=rf"seq_len must be at least 8, got {seq_len}: .*degenerate Fisher"):
        ProbeConfig(name="p", seq_len=seq_len)
    assert ProbeConfig(name="p", seq_len=8).seq_len == 8


@pytest.mark.parametrize("n_batches", [1, 2])
def test_probe_config_refuses_fewer_than_3_batches(n_batches):
    with pytest.raises(ValueError, match=rf"n_batches must be at least 3, got {n_batches}: .*jackknife"):
        ProbeConfig(name="p", n_batches=n_batches)
    assert ProbeConfig(name="p", n_batches=3).n_batches == 3
    with pytest.raises(ValueError, match=r"min_batches must be an integer >= 3"):
        ProbeConfig(name="p", min_batches=2)


def test_probe_config_checks_happen_on_replace_too():
    config = ProbeConfig(name="p")
    with pytest.raises(ValueError, match="n_batches must be at least 3"):
        config.replace(n_batches=2)
    with pytest.raises(ValueError, match="lr must be a finite non-negative number"):
        config.replace(lr=math.inf)
