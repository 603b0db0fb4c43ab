"""Shared fixtures: tiny seeded GPT-2-architecture probes saved to temporary folders; and how the
suite shares the machine when it runs in parallel (pytest-xdist, `scripts/test.sh`):

- each worker gets an equal share of the usable cores as its torch thread budget
  (`DIVCOEF_TORCH_THREADS`, also read by the audits a test starts in a subprocess), so two
  workers on two cores do not each start two intra-op threads;
- the modules in `ISOLATED` (they start servers, Ray heads or `divcoef audit` subprocesses) form
  one unit of work: one worker runs them one after another, first, while the others share the
  rest, so none of them competes with another for ports, cores or wall-clock timeouts;
- every other module is a unit of its own, so a module-scoped fixture is built once, not once
  per worker.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ISOLATED = frozenset(f"divcoef_assets_tests/{name}.py" for name in (
    "test_battery",  # the battery study in a subprocess
    "test_browser",  # a Dagster webserver and a browser
    "test_cli_audit",  # `divcoef audit` subprocesses
    "reliability/test_audit_interrupt",
    "test_ray",  # a Ray head
    "test_team",  # PostgreSQL, a Ray head and a second node
))


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:  # inside a pytest-xdist worker
        from divcoef_assets.threads import THREADS_ENV, usable_cpus

        os.environ.setdefault(THREADS_ENV, str(max(1, usable_cpus() // int(workers))))
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))


def pytest_collection_modifyitems(config, items):
    """The isolated modules first (a stable sort), so that their long unit of work starts first."""
    items.sort(key=lambda item: _module_of(item.nodeid) not in ISOLATED)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook; the suite also runs without it
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        """One unit of work per module, all of `ISOLATED` one unit; handed out in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            module = _module_of(nodeid)
            return "isolated" if module in ISOLATED else module

    config.option.loadscopereorder = False  # keep the isolated unit first
    return ModuleScheduling(config, log)


@pytest.fixture(autouse=True)
def no_instance_left_entered():
    """Fails the test that leaves a Dagster instance entered (a `build_sensor_context` or
    `build_schedule_context` used without `with`, say): the instance stays the process's current
    state storage after it is gone, and every later test that loads definitions in this worker
    fails with "Attempted to resolve undefined DagsterInstance weakref"."""
    from dagster._core.storage.defs_state import base

    before = base.DefsStateStorage.get()
    yield
    if base.DefsStateStorage.get() is not before:
        base._current_storage.set(before)  # later tests start clean
        pytest.fail("this test left a Dagster instance entered; use the context it came from in a `with` block")


def save_tiny_gpt2(folder, *, vocab_size=50257, n_layer=2, n_embd=16, n_head=2, n_positions=32, seed=0, dropout=0.1):
    """A randomly initialised GPT-2 saved with save_pretrained (safetensors)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    return folder


def write_word_corpora(folder, vocabularies: dict, *, n: int = 30, words_per_text: int | tuple[int, int] = 10, seed: int = 0):
    """One JSON Lines file per name in `vocabularies`: `n` texts of random words from its list,
    `words_per_text` words each (a `(low, high)` pair: a random count in that half-open range)."""
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    for name, words in vocabularies.items():
        with open(folder / f"{name}.jsonl", "w") as fh:
            for _ in range(n):
                size = rng.integers(*words_per_text) if isinstance(words_per_text, tuple) else words_per_text
                fh.write(json.dumps({"text": " ".join(rng.choice(words, size=size))}) + "\n")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    """2 layers, n_embd 16, 32 positions, GPT-2's vocabulary (so the GPT-2 tokenizer fits)."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: on models this small, handing each op to a thread pool
    costs more than the op (several times the run time on a loaded or many-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

