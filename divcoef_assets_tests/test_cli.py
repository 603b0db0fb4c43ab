"""The `divcoef` command line on a tiny probe and a generated corpus."""

from __future__ import annotations

import json

import numpy as np

from divcoef_assets.cli import main


def _corpus(path, seed, words):
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for _ in range(30):
            fh.write(json.dumps({"body": " ".join(rng.choice(words, size=12))}) + "\n")
    return path


def test_cli_diversity_json(tiny_gpt2_dir, tmp_path, capsys):
    corpus = _corpus(tmp_path / "c.jsonl", 0, ["alpha", "beta", "gamma", "delta", "eps"])
    rc = main([
        "diversity", str(corpus), "--text-column", "body", "--probe", str(tiny_gpt2_dir), "--seq-len", "16",
        "--batch-size", "8", "--n-batches", "3", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--json",
    ])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "c" and out["n_batches"] == 3 and 0 < out["value"] <= 1
    assert out["ci_low"] <= out["value"] <= out["ci_high"] and out["noise_floor"] is not None


def test_cli_reports_bad_input_with_exit_code_2(tiny_gpt2_dir, tmp_path, capsys):
    rc = main(["diversity", str(tmp_path / "missing.jsonl"), "--probe", str(tiny_gpt2_dir), "--cache-dir", str(tmp_path)])
    assert rc == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_cli_less_work_options_reach_the_engine(tiny_gpt2_dir, tmp_path, capsys):
    corpus = _corpus(tmp_path / "c.jsonl", 0, ["alpha", "beta", "gamma", "delta", "eps"])
    common = [
        "diversity", str(corpus), "--text-column", "body", "--probe", str(tiny_gpt2_dir), "--seq-len", "16",
        "--batch-size", "8", "--n-batches", "6", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--json",
    ]
    assert main(common + ["--target-half-width", "1.0", "--min-batches", "3"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["n_batches"] == 3  # any interval is narrower than 1.0: stops at the minimum
    assert main(common + ["--target-half-width", "1.0", "--min-batches", "3", "--finetune", "cached_body",
                          "--precision", "bf16", "--fisher-squares", "sequence"]) == 0
    cheap = json.loads(capsys.readouterr().out)
    assert cheap["n_batches"] == 3 and 0 < cheap["value"] <= 1
    assert cheap["probe_fingerprint"] != plain["probe_fingerprint"]


def test_cli_register_checks_the_entry_and_adds_it_keeping_the_file_as_written(tmp_path, capsys):
    from divcoef_assets.registry import load_registry

    (tmp_path / "corpora").mkdir()
    _corpus(tmp_path / "corpora" / "new.jsonl", 0, ["alpha", "beta"])
    registry = tmp_path / "registry.yaml"
    registry.write_text("# my datasets\ndefault_probe: p\nallowed_roots: [corpora]\ndatasets:\n  # the first\n"
                        "  old:\n    source: synthetic\n    kind: lower_bound\n\nprobes:\n  p:\n    model: gpt2\n    batch_size: 32\n")
    before = registry.read_text()
    args = ["register", "new", str(tmp_path / "corpora" / "new.jsonl"), "--format", "jsonl", "--registry", str(registry)]
    assert main([*args, "--text-column", "text"]) == 2  # the file has `body`, not `text`
    assert "text" in capsys.readouterr().err and registry.read_text() == before  # nothing written
    assert main(["register", "outside", str(tmp_path / "corpora" / "new.jsonl"), "--registry", str(tmp_path / "x.yaml")]) == 2
    capsys.readouterr()

    assert main([*args, "--text-column", "body", "--description", "a new corpus"]) == 0
    out = capsys.readouterr()
    assert "registered new" in out.out and "30 documents" in out.out and "fewer than one batch" in out.err
    text = registry.read_text()
    assert text.startswith(before.split("\nprobes:")[0]) and "# the first" in text and text.index("  new:") < text.index("probes:")
    entry = load_registry(registry).datasets["new"]
    assert entry.source.path == "corpora/new.jsonl" and entry.source.text_column == "body" and entry.description == "a new corpus"
    assert main([*args, "--text-column", "body"]) == 2 and "already registered" in capsys.readouterr().err
    _corpus(tmp_path / "elsewhere.jsonl", 1, ["gamma"])
    assert main(["register", "far", str(tmp_path / "elsewhere.jsonl"), "--text-column", "body", "--registry", str(registry)]) == 2
    assert "allowed roots" in capsys.readouterr().err and "far:" not in registry.read_text()
