import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from saexplain_demo.corpus import DEMO_MODULES, default_cache_dir, demo_corpus


def test_corpus_is_large_clean_prose():
    docs = demo_corpus()
    assert len(docs) > 2000
    assert sum(len(d) for d in docs) > 400_000  # ~150k SmolLM2 tokens
    assert all(d and d == d.strip() for d in docs)
    paragraphs = [p for d in docs for p in d.split("\n\n")]
    assert all(p and "\n" not in p and "  " not in p and "\t" not in p for p in paragraphs)
    assert len(set(paragraphs)) == len(paragraphs)  # repeated docstrings are removed
    assert not any(p.lstrip().startswith(">>>") for p in paragraphs)  # code samples dropped
    words = " ".join(docs).split()
    assert sum(w.isalpha() for w in words) / len(words) > 0.7  # mostly words, not symbols
    assert len(DEMO_MODULES) == len(set(DEMO_MODULES))


def test_corpus_prefix_and_errors():
    docs = demo_corpus()
    assert demo_corpus(10) == docs[:10]
    assert demo_corpus(0) == []
    demo_corpus(5).append("mutating a result does not touch the cache")
    assert demo_corpus(6) == docs[:6]
    with pytest.raises(ValueError, match="n_docs"):
        demo_corpus(-1)


def test_corpus_is_deterministic_across_processes():
    """A fresh interpreter (different import state, hash seed) builds the same corpus, and
    building it imports no heavy library."""
    code = (
        "import json, sys; from saexplain_demo.corpus import demo_corpus; d = demo_corpus(); "
        "heavy = [m for m in ('torch', 'transformers', 'sae_lens') if m in sys.modules]; "
        "print(json.dumps({'n': len(d), 'head': d[:50], 'tail': d[-50:], 'heavy': heavy}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    other = json.loads(out.stdout)
    docs = demo_corpus()
    assert other["n"] == len(docs)
    assert other["head"] == docs[:50] and other["tail"] == docs[-50:]
    assert other["heavy"] == []


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "demo"
    monkeypatch.delenv("SAEXPLAIN_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "saexplain" / "demo"
