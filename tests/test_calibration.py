"""The shared strength calibration (`saexplain.methods.calibrate`) on the numpy fake backend:
it reaches a KL target within tolerance, with one batched pass per step, caches what it found
(in the run's work folder or in memory), and reports targets it cannot reach."""

from __future__ import annotations

import asyncio
import json

import pytest

from saexplain.methods import (
    NEUTRAL_PROMPTS,
    Add,
    Clamp,
    ConfigError,
    MethodContext,
    Strength,
    calibrate,
    generate_pairs,
    mean_kl,
)
from saexplain.testing import FakeBackend, FakeCoder


@pytest.fixture
def stack() -> tuple[FakeBackend, FakeCoder]:
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=512)
    coder = FakeCoder.planted(backend, {0: " cat", 1: " dog"}, d_sae=8)
    return backend, coder


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.parametrize("kind", ["clamp", "steer"])
@pytest.mark.parametrize("target", [0.25, 0.5])
def test_reaches_target_within_tolerance(stack, kind, target) -> None:
    backend, coder = stack
    ctx = MethodContext(backend=backend, coder=coder)
    strength = run(calibrate(ctx, 0, target_kl=target, kind=kind))
    assert strength.reached, strength
    assert abs(strength.kl - target) <= 0.1 * target
    assert strength.kind == kind and strength.latent == 0 and strength.value > 0
    assert 2 <= strength.steps <= 16
    # the reported KL is what the edits give, measured independently
    measured = mean_kl(backend, coder, NEUTRAL_PROMPTS, strength.edits(coder))
    assert measured == pytest.approx(strength.kl, rel=1e-9)
    edit = strength.edits(coder)[0]
    assert isinstance(edit, Clamp if kind == "clamp" else Add)


def test_one_batched_pass_per_step(stack) -> None:
    backend, coder = stack
    before = backend.forward_calls
    strength = run(calibrate(MethodContext(backend=backend, coder=coder), 1, target_kl=0.3))
    # every pass covers all prompts at once: passes == steps, not steps x prompts
    assert backend.forward_calls - before == strength.steps


def test_cached_in_work_dir_and_in_memory(stack, tmp_path) -> None:
    backend, coder = stack
    ctx = MethodContext(backend=backend, coder=coder, work_dir=tmp_path / "cache")
    first = run(calibrate(ctx, 0, target_kl=0.5))
    files = list((tmp_path / "cache" / "calibration").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["strength"]["value"] > 0
    calls = backend.forward_calls
    again = run(
        calibrate(
            MethodContext(backend=backend, coder=coder, work_dir=ctx.work_dir), 0, target_kl=0.5
        )
    )
    assert backend.forward_calls == calls  # read back, no forward pass
    assert again.steps == 0 and again.value == pytest.approx(first.value, rel=1e-5)
    # another target is another search
    run(calibrate(ctx, 0, target_kl=0.25))
    assert backend.forward_calls > calls

    memory = MethodContext(backend=backend, coder=coder)
    run(calibrate(memory, 1, target_kl=0.5))
    calls = backend.forward_calls
    assert run(calibrate(memory, 1, target_kl=0.5)).steps == 0
    assert backend.forward_calls == calls


def test_unreachable_target_is_reported(stack) -> None:
    backend, coder = stack
    ctx = MethodContext(backend=backend, coder=coder)
    # a clamp cannot push the KL past -log p_clean of the token it forces, nor past max_value
    strength = run(calibrate(ctx, 0, target_kl=50.0, max_value=10.0))
    assert not strength.reached
    assert strength.kl < 45.0 and strength.value <= 10.0
    assert strength.to_json()["reached"] is False


def test_bad_requests_fail_before_model_work(stack) -> None:
    backend, coder = stack
    ctx = MethodContext(backend=backend, coder=coder)
    calls = backend.forward_calls
    with pytest.raises(ConfigError, match="kind"):
        run(calibrate(ctx, 0, target_kl=0.5, kind="zap"))
    with pytest.raises(ConfigError, match="outside"):
        run(calibrate(ctx, 99, target_kl=0.5))
    with pytest.raises(ConfigError, match="target_kl"):
        run(calibrate(ctx, 0, target_kl=0.0))
    assert backend.forward_calls == calls


def test_strength_round_trips_and_pairs_differ(stack) -> None:
    backend, coder = stack
    ctx = MethodContext(backend=backend, coder=coder)
    strength = run(calibrate(ctx, 0, target_kl=2.0))
    assert Strength.from_json(strength.to_json()).to_json() == strength.to_json()
    prompts = NEUTRAL_PROMPTS[:3]
    pairs = run(generate_pairs(ctx, strength, prompts, max_new_tokens=4, temperature=0.0, seed=1))
    assert len(pairs) == 3
    assert [c for c, _ in pairs] == backend.generate(prompts, max_new_tokens=4)
    assert any(clean != edited for clean, edited in pairs)


@pytest.mark.parametrize("kind", ["clamp", "steer"])
def test_pairs_of_all_prompt_lengths_are_one_generate_call(stack, kind, monkeypatch) -> None:
    backend, coder = stack
    ctx = MethodContext(backend=backend, coder=coder)
    strength = run(calibrate(ctx, 0, target_kl=2.0, kind=kind))
    prompts = ["The", "I think that", "She said that", "Yesterday I"]  # token lengths 2, 4, 4, 3
    lengths = {int(n) for n in backend.tokenize(prompts).mask.sum(axis=1)}
    assert len(lengths) == 3
    calls: list[int] = []
    generate = backend.generate

    def counted(texts, edits=(), **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return generate(texts, edits, **kwargs)

    monkeypatch.setattr(backend, "generate", counted)
    pairs = run(generate_pairs(ctx, strength, prompts, max_new_tokens=4, temperature=0.0, seed=1))
    # both arms of all prompts, whatever their lengths, in one call of twice the prompts
    assert calls == [8]
    monkeypatch.setattr(backend, "generate", generate)
    clean = backend.generate(prompts, max_new_tokens=4)
    edited = backend.generate(prompts, strength.edits(coder), max_new_tokens=4)
    assert pairs == list(zip(clean, edited, strict=True))
    assert any(c != e for c, e in pairs)
