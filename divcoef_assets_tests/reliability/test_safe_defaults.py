"""Safe defaults: probe weights come from safetensors only, no code from a model repository
ever runs, and nothing in the package unpickles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import divcoef_assets
from divcoef_assets.core.config import ProbeConfig
from divcoef_assets.core.probe import ProbeLoadError, load_probe

PACKAGE = Path(divcoef_assets.__file__).parent


def test_loading_asks_transformers_for_safetensors_without_remote_code(small_probe_dir, monkeypatch):
    import transformers

    calls = []
    real_model = transformers.AutoModelForCausalLM.from_pretrained.__func__
    real_config = transformers.AutoConfig.from_pretrained.__func__

    def spy_model(cls, *args, **kwargs):
        calls.append(("model", kwargs))
        return real_model(cls, *args, **kwargs)

    def spy_config(cls, *args, **kwargs):
        calls.append(("config", kwargs))
        return real_config(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy_model))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(spy_config))
    load_probe(ProbeConfig(name="tiny", model=str(small_probe_dir), seq_len=8))
    kinds = [kind for kind, _ in calls]
    assert "model" in kinds and "config" in kinds
    for kind, kwargs in calls:
        assert kwargs.get("trust_remote_code") is False, (kind, kwargs)
        if kind == "model":
            assert kwargs.get("use_safetensors") is True, kwargs


def test_pickle_only_folder_is_refused_before_anything_is_unpickled(tmp_path, small_probe_dir, monkeypatch):
    import torch

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((small_probe_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called on a probe folder")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(ProbeLoadError, match="only has pickle weights"):
        load_probe(ProbeConfig(name="p", model=str(folder), seq_len=8))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return ast.unparse(kw.value)
    return None


def unsafe_calls(source: str, where: str = "<source>") -> list[str]:
    """Every unpickling import or call, remote-code trust or non-safetensors load in `source`."""
    problems = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib") for n in names):
                problems.append(f"{where}:{node.lineno} imports a pickle module")
    for call, func in _calls(tree):
        if func == "torch.load" and _keyword(call, "weights_only") != "True":
            problems.append(f"{where}:{call.lineno} torch.load without weights_only=True")
        if func.endswith(("pickle.load", "pickle.loads")):
            problems.append(f"{where}:{call.lineno} {func} unpickles")
        if func in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") not in (None, "False"):
            problems.append(f"{where}:{call.lineno} {func} with allow_pickle")
        if _keyword(call, "trust_remote_code") not in (None, "False"):
            problems.append(f"{where}:{call.lineno} {func} with trust_remote_code={_keyword(call, 'trust_remote_code')}")
        if _keyword(call, "use_safetensors") not in (None, "True"):
            problems.append(f"{where}:{call.lineno} {func} with use_safetensors={_keyword(call, 'use_safetensors')}")
        if func.endswith("from_pretrained") and _keyword(call, "trust_remote_code") is None:
            problems.append(f"{where}:{call.lineno} {func} without an explicit trust_remote_code=False")
    return problems


def test_no_module_unpickles_or_trusts_remote_code():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_it_looks_for():
    """The scan is not vacuous: each forbidden pattern is flagged, the safe forms are not."""
    bad = [
        "import pickle",
        "from cloudpickle import loads",
        "torch.load('w.bin')",
        "torch.load('w.bin', weights_only=False)",
        "pickle.loads(b'')",
        "np.load('a.npy', allow_pickle=True)",
        "AutoModel.from_pretrained('x', trust_remote_code=True)",
        "AutoModel.from_pretrained('x', use_safetensors=False, trust_remote_code=False)",
        "AutoTokenizer.from_pretrained('x')",
    ]
    for line in bad:
        assert unsafe_calls(line), line
    good = "torch.load('w.pt', weights_only=True)\nAutoModel.from_pretrained('x', use_safetensors=True, trust_remote_code=False)\n"
    assert unsafe_calls(good) == []
