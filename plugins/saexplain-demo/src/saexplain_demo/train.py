"""The demo's SAE: a small top-k SAE trained on the subject model the first time, then loaded from
a cache.

- `demo_coder_for(backend)`: the SAE for the model behind a torch backend (what the `demo:` coder
  source calls); `demo_sae(cache_dir)`: SmolLM2 (an nnsight `TransformersModel` with its
  tokenizer, see `saexplain_demo.model`) and that SAE.

Training (`train_topk_sae`) is a small torch loop in the style of Gao et al. (2024), "Scaling and
evaluating sparse autoencoders": top-k activation, unit-norm decoder rows, encoder initialised as
the decoder's transpose, the decoder bias at the data mean, inputs scaled to mean norm sqrt(d), and
the AuxK loss that gives dead latents a gradient. Decoding gathers the k active rows
(`embedding_bag`) instead of multiplying by a mostly-zero matrix, and Adam is fused (a step took
1.3x less time than SAELens's `SAETrainer` step, same batch and width, same process, no dead
latents; the AuxK step is cheaper still, as it decodes sparsely too). The result is an ordinary
SAELens `TopKSAE` (saved with `save_model`, loaded with `SAE.load_from_disk`), with the input
scaling folded into its biases so it reads raw residual-stream activations and its decoder rows
have unit norm.

The demo's default SAE ships with this package (`data/demo-sae.safetensors`, float16, with
`data/demo-sae.json`: the settings and model that made it and the file's sha256, checked at every
load), so the first run trains nothing; it is used when the settings, the model's weights and the
corpus are the demo's defaults, and anything else trains as before. Reproduce it with

    python -m saexplain_demo.train --ship plugins/saexplain-demo/src/saexplain_demo/data

(CPU, about 2 minutes on 2 idle cores; another machine's thread count can change the last
bits).

Activations are read through the backend's own hook translation (exactly what its coders see),
running the model only up to the hook, on contexts cut as the pipeline cuts a text dataset
(`saexplain.store.datasets.ContextStream`: documents joined with BOS, contexts that start with
BOS). Position 0 (the BOS attention sink, excluded by `SAELensCoder(exclude_bos=True)`) is left
out of training; BOS separators inside contexts stay in, since the pipeline encodes them too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from saexplain_saelens.coders import SAELensCoder
from tqdm.auto import tqdm

from saexplain.errors import ConfigError
from saexplain.files import publish_dir
from saexplain_demo.corpus import default_cache_dir, demo_corpus
from saexplain_demo.model import DEMO_MODEL_ID, demo_backend, demo_model

if TYPE_CHECKING:
    from saexplain.protocols import Backend

__all__ = [
    "SHIPPED",
    "DemoSAESettings",
    "TrainStats",
    "backend_activations",
    "demo_coder_for",
    "demo_contexts",
    "demo_sae",
    "demo_train_record",
    "model_fingerprint",
    "ship_sae",
    "shipped_manifest",
    "shipped_sae_dir",
    "train_topk_sae",
]

# Bump when the training recipe changes, so old caches are not reused for a different SAE.
_RECIPE_VERSION = 1
_SAE_DIR = "demo-sae"
_STATS_FILE = "demo_train.json"
# The SAE that ships with the package: <SHIPPED>.safetensors (float16) and <SHIPPED>.json.
SHIPPED = "demo-sae"
_DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class DemoSAESettings:
    """Everything the trained SAE depends on (the cache key is a hash of this, the corpus, the
    recipe version and the SAELens and torch versions)."""

    layer: int = 3
    expansion: int = 4
    k: int = 32
    # 1M samples (about 7 epochs of the 143k-token corpus): more token-specific latents and a
    # lower FVU than 200k on held-out text (see the plugin's README); the shipped SAE's setting
    n_train_tokens: int = 1_000_000
    context_length: int = 128
    batch_size: int = 1024
    lr: float = 2e-3
    seed: int = 0

    def validate(self, n_layers: int | None = None) -> None:
        if self.layer < 0 or (n_layers is not None and self.layer >= n_layers):
            raise ConfigError(f"layer must be in [0, {n_layers}), got {self.layer}")
        for name in ("expansion", "k", "n_train_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.context_length < 2:
            raise ConfigError(f"context_length must be >= 2, got {self.context_length}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class TrainStats:
    """What `train_topk_sae` measured (also written next to the cached SAE)."""

    n_tokens: int  # distinct activation vectors trained on
    n_samples: int  # training samples seen (several epochs when the corpus is short)
    n_steps: int
    seconds: float
    final_fvu: float  # fraction of variance unexplained over the last 10% of steps
    dead_fraction: float  # latents that did not fire during the last epoch
    scale: float  # input scaling that was folded into the biases


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


# --- activations ---------------------------------------------------------------------------------


@torch.no_grad()
def backend_activations(
    backend: Any,
    contexts: torch.Tensor,
    hook: str,
    *,
    batch_size: int = 32,
    skip_first: bool = True,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Activations at canonical `hook` for `contexts` (n, seq) token ids, flattened to
    (n * positions, width) float32, read through a torch backend's own hook translation (so they
    are exactly what the backend's coders see) with the model run only up to the hook's layer.
    `skip_first` drops position 0 (BOS) of every context."""
    site = backend.site(hook)
    n, seq = contexts.shape
    start = 1 if skip_first else 0
    width = int(backend.width(site))
    out = torch.empty(n, seq - start, width, dtype=torch.float32)
    captured: list[torch.Tensor] = []

    def capture(x: torch.Tensor) -> None:
        captured.append(x)

    for i in range(0, n, batch_size):
        batch = contexts[i : i + batch_size].to(backend.device)
        captured.clear()
        backend._forward(batch, {site: [capture]}, site.stop_layer)
        if len(captured) != 1:
            raise RuntimeError(f"{backend.name}: the hook at {hook} ran {len(captured)} times")
        out[i : i + len(batch)] = captured[0][:, start:].float().cpu()
        if progress is not None:
            progress(len(batch))
    return out.reshape(-1, width)


def demo_contexts(backend: Backend, texts: Sequence[str], context_length: int, n_max: int) -> Any:
    """Up to `n_max` contexts cut from `texts` exactly as the pipeline cuts a dataset."""
    from saexplain.store.datasets import ContextStream

    rows: list[np.ndarray[Any, Any]] = []
    for row in ContextStream(backend, list(texts), context_length):
        rows.append(row)
        if len(rows) >= n_max:
            break
    if not rows:
        raise ConfigError(f"the corpus is shorter than one context of {context_length} tokens")
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


# --- training ------------------------------------------------------------------------------------


def train_topk_sae(
    acts: torch.Tensor,
    *,
    d_sae: int,
    k: int,
    hook: str,
    n_samples: int,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    dead_after: int = 50_000,
    k_aux: int | None = None,
    aux_coefficient: float = 1 / 32,
    model_name: str = DEMO_MODEL_ID,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Any, TrainStats]:
    """Train a top-k SAE on `acts` (n, d_in) for `n_samples` samples (reshuffled each epoch) and
    return it as a SAELens `TopKSAE` reading raw activations, with what was measured.

    A latent counts as dead once it has not fired for `dead_after` samples; the AuxK loss then
    asks the `k_aux` (default d_in // 2) most active dead latents to explain the residual error.
    """
    from sae_lens import SAE

    n, d_in = acts.shape
    if n < batch_size:
        raise ConfigError(f"{n} activation vectors are fewer than one batch of {batch_size}")
    if not 0 < k <= d_sae:
        raise ConfigError(f"k={k} must be in [1, d_sae={d_sae}]")
    k_aux = min(k_aux or d_in // 2, d_sae)
    gen = torch.Generator().manual_seed(seed)
    acts = acts.float()
    # Scale inputs to mean norm sqrt(d_in): the learning rate then suits any model.
    probe = acts[torch.randperm(n, generator=gen)[: min(n, 20_000)]]
    scale = math.sqrt(d_in) / float(probe.norm(dim=-1).mean())

    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    W_dec = torch.nn.Parameter(w_dec)
    W_enc = torch.nn.Parameter(w_dec.T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(d_sae))
    b_dec = torch.nn.Parameter(probe.mean(0) * scale)
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=True)  # fused: 4x on CPU
    n_steps = max(1, n_samples // batch_size)
    warmup, decay_from = min(10, n_steps // 10), int(0.8 * n_steps)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        if step >= decay_from:
            return lr * max(0.05, (n_steps - step) / max(1, n_steps - decay_from))
        return lr

    since_fired = torch.zeros(d_sae, dtype=torch.long)
    fired_epoch = torch.zeros(d_sae, dtype=torch.bool)
    tail_err, tail_var = 0.0, 0.0
    perm = torch.randperm(n, generator=gen)
    cursor = 0
    started = time.perf_counter()
    for step in range(n_steps):
        if cursor + batch_size > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
            fired_epoch.zero_()
        x = acts[perm[cursor : cursor + batch_size]] * scale
        cursor += batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step)

        # (x - b_dec) @ W_enc, written so the backward pass skips a dense input-gradient matmul
        pre = x @ W_enc + (b_enc - b_dec @ W_enc)
        values, index = pre.topk(k, dim=-1, sorted=False)
        values = values.relu()
        recon = F.embedding_bag(index, W_dec, per_sample_weights=values, mode="sum") + b_dec
        err = x - recon
        loss = err.pow(2).sum(-1).mean()

        with torch.no_grad():
            fired = torch.zeros(d_sae, dtype=torch.bool)
            fired[index[values > 0]] = True
            since_fired += batch_size
            since_fired[fired] = 0
            fired_epoch |= fired
            dead = since_fired >= dead_after
            n_dead = int(dead.sum())
        if n_dead:
            # AuxK: the most active dead latents reconstruct what the live ones missed.
            ka = min(k_aux, n_dead)
            aux_pre = pre.masked_fill(~dead, float("-inf"))
            aux_values, aux_index = aux_pre.topk(ka, dim=-1, sorted=False)
            aux_recon = F.embedding_bag(
                aux_index, W_dec, per_sample_weights=aux_values.relu(), mode="sum"
            )
            aux = (aux_recon - err.detach()).pow(2).sum(-1).mean()
            loss = loss + aux_coefficient * min(1.0, n_dead / k_aux) * aux

        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            # Keep decoder rows unit-norm: drop the gradient along each row, then renormalise.
            assert W_dec.grad is not None
            W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            W_dec.div_(W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))
            if step >= n_steps - max(1, n_steps // 10):
                tail_err += float(err.pow(2).sum())
                tail_var += float((x - x.mean(0)).pow(2).sum())
        if progress is not None:
            progress(batch_size, loss.item())

    with torch.no_grad():
        # Fold the input scaling into the biases: same latents and decoder rows, raw units.
        cfg = {
            "architecture": "topk",
            "d_in": d_in,
            "d_sae": d_sae,
            "k": k,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "rescale_acts_by_decoder_norm": False,
            "metadata": {
                "hook_name": hook,
                "model_name": model_name,
                "release": "saexplain-demo",
                "sae_id": f"{hook}/topk-{d_sae}-k{k}",
                "prepend_bos": True,
            },
        }
        sae = SAE.from_dict(cfg)
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.copy_(b_enc / scale)
        sae.b_dec.copy_(b_dec / scale)
    stats = TrainStats(
        n_tokens=n,
        n_samples=n_steps * batch_size,
        n_steps=n_steps,
        seconds=time.perf_counter() - started,
        final_fvu=tail_err / max(tail_var, 1e-12),
        dead_fraction=float((~fired_epoch).float().mean()),
        scale=scale,
    )
    return sae.eval(), stats


# --- the cached demo SAE -------------------------------------------------------------------------


def _torch_module(backend: Any) -> torch.nn.Module:
    for name in ("hf", "model"):  # nnsight backend: .hf; TransformerLens backend: .model
        module = getattr(backend, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ConfigError(
        f"the demo SAE trains through a torch backend (nnsight or TransformerLens), got "
        f"{type(backend).__name__}"
    )


@torch.no_grad()
def model_fingerprint(backend: Any) -> str:
    """A cheap digest of the backend's weights (shapes and per-tensor sums), so a cached SAE is
    never reused for a different model that happens to share a name."""
    digest = hashlib.blake2b(digest_size=8)
    for name, param in sorted(_torch_module(backend).state_dict().items()):
        total = float(param.double().sum()) if param.is_floating_point() else 0.0
        digest.update(f"{name}:{tuple(param.shape)}:{total:.6e};".encode())
    return digest.hexdigest()


def _cache_key(settings: DemoSAESettings, corpus: Sequence[str], model: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for doc in corpus:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\x00")
    key = {
        "settings": asdict(settings),
        "corpus": digest.hexdigest(),
        "recipe": _RECIPE_VERSION,
        "model": model,
        "sae_lens": version("sae-lens"),
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def demo_sae_dir(
    cache_dir: str | Path, settings: DemoSAESettings, corpus: Sequence[str], backend: Any
) -> Path:
    """Where the SAE for these settings, this corpus and this model is cached."""
    model = f"{backend.model_id}:{model_fingerprint(backend)}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(backend.model_id)).strip("-").lower()[:40] or "model"
    d_sae = settings.expansion * int(backend.d_model)
    key = _cache_key(settings, corpus, model)
    name = f"{slug}-L{settings.layer}-topk{d_sae}-k{settings.k}-{key}"
    return Path(cache_dir) / _SAE_DIR / name


def _settings_from_spec(spec: str, settings: dict[str, Any]) -> DemoSAESettings:
    spec = spec.strip()
    if spec:
        match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", spec)
        if match is None:
            raise ConfigError(
                f"demo coder {spec!r}: give nothing or 'blocks.<layer>.hook_resid_pre'"
            )
        settings = {**settings, "layer": int(match.group(1))}
    known = {f.name for f in fields(DemoSAESettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown demo SAE settings {unknown}; known: {sorted(known)}")
    return DemoSAESettings(**settings)


def demo_coder_for(
    backend: Any,
    spec: str = "",
    *,
    cache_dir: str | Path | None = None,
    corpus: Sequence[str] | None = None,
    progress: bool = True,
    **settings: Any,
) -> SAELensCoder:
    """The demo's top-k SAE for `backend`'s model at `blocks.{layer}.hook_resid_pre` (or the hook
    `spec` names), trained on the first call and loaded from the cache after.

    `settings` are `DemoSAESettings` fields (layer, expansion, k, n_train_tokens, context_length,
    batch_size, lr, seed). `n_train_tokens` training samples are drawn from the activations of
    `corpus` (default `demo_corpus()`, ~150k tokens: epochs repeat when it is shorter). The cache
    (`cache_dir`, default `$SAEXPLAIN_CACHE_DIR/demo` or `~/.cache/saexplain/demo`) is keyed by
    every setting, the corpus, the model's weights and the SAELens and torch versions.
    """
    if backend is None:
        raise ConfigError("the demo coder needs the backend whose model it is trained on")
    config = _settings_from_spec(spec, settings)
    config.validate(int(backend.n_layers))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    texts = list(corpus) if corpus is not None else demo_corpus()
    if corpus is None:
        shipped = shipped_sae_dir(cache, config, backend)
        if shipped is not None:
            return SAELensCoder.from_disk(shipped, id=f"saexplain-demo/{shipped.name}")
    target = demo_sae_dir(cache, config, texts, backend)
    if not (target / "cfg.json").is_file():
        _train_into(target, backend, config, texts, progress=progress)
    return SAELensCoder.from_disk(target, id=f"saexplain-demo/{target.name}")


def demo_sae(
    cache_dir: str | Path | None = None,
    *,
    layer: int = 3,
    expansion: int = 4,
    k: int = 32,
    n_train_tokens: int = 1_000_000,
    context_length: int = 128,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    corpus: Sequence[str] | None = None,
) -> tuple[Any, SAELensCoder]:
    """SmolLM2-135M-Instruct (an nnsight `TransformersModel`; `demo_backend(model)` wraps it) and
    the demo's top-k SAE on it (see `demo_coder_for`), cached under `cache_dir`."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model = demo_model()
    coder = demo_coder_for(
        demo_backend(model),
        cache_dir=cache,
        corpus=corpus,
        progress=progress,
        layer=layer,
        expansion=expansion,
        k=k,
        n_train_tokens=n_train_tokens,
        context_length=context_length,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
    )
    return model, coder


def _train_into(
    target: Path,
    backend: Any,
    settings: DemoSAESettings,
    texts: Sequence[str],
    *,
    progress: bool,
) -> None:
    hook = hook_name(settings.layer)
    per_context = settings.context_length - 1  # BOS at position 0 is not trained on
    n_max = math.ceil(settings.n_train_tokens / per_context)
    t0 = time.perf_counter()
    contexts = demo_contexts(backend, texts, settings.context_length, n_max)
    n_tokens = len(contexts) * per_context
    with tqdm(
        total=n_tokens, desc="demo SAE: activations", unit="tok", disable=not progress
    ) as bar:
        acts = backend_activations(
            backend, contexts, hook, progress=lambda m: bar.update(m * per_context)
        )
    t_extract = time.perf_counter() - t0
    n_samples = max(settings.n_train_tokens, settings.batch_size)
    with tqdm(total=n_samples, desc="demo SAE: training", unit="tok", disable=not progress) as bar:

        def tick(m: int, loss: float) -> None:
            bar.update(m)
            bar.set_postfix(loss=f"{loss:.3g}", refresh=False)

        sae, stats = train_topk_sae(
            acts,
            d_sae=settings.expansion * int(backend.d_model),
            k=settings.k,
            hook=hook,
            n_samples=n_samples,
            batch_size=min(settings.batch_size, len(acts)),
            lr=settings.lr,
            seed=settings.seed,
            model_name=str(backend.model_id),
            progress=tick,
        )
    del acts
    # Write to a sibling folder, then publish it whole: a crash never leaves a half-written cache.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        sae.save_model(str(staging))
        record = {
            "settings": asdict(settings),
            "stats": asdict(stats),
            "extract_seconds": t_extract,
            "n_contexts": len(contexts),
            "model": str(backend.model_id),
            "sae_lens": version("sae-lens"),
            "torch": torch.__version__,
        }
        (staging / _STATS_FILE).write_text(json.dumps(record, indent=2))
        if not (target / "cfg.json").is_file():  # another process may have finished first
            publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def demo_train_record(coder: SAELensCoder, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The training record saved next to a cached demo SAE (settings, stats, timings)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = coder.id.rpartition("/")[2]
    path = cache / _SAE_DIR / name / _STATS_FILE
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# --- the shipped demo SAE ------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_manifest(data_dir: Path = _DATA) -> dict[str, Any] | None:
    """What `data/demo-sae.json` says of the shipped SAE (settings, model, sha256, the SAELens
    config, training stats and the command that made it); None when no SAE ships."""
    path = data_dir / f"{SHIPPED}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_shipped(cache_dir: str | Path, data_dir: Path = _DATA) -> Path:
    """The shipped SAE as a float32 SAELens folder in `cache_dir` (converted on first use). The
    file's sha256 is checked against its manifest every time: a damaged or replaced file is a
    `ConfigError`, never a silently different SAE."""
    from safetensors.torch import load_file, save_file

    manifest = shipped_manifest(data_dir)
    weights = data_dir / f"{SHIPPED}.safetensors"
    if manifest is None or not weights.is_file():
        raise ConfigError(f"no demo SAE ships in {data_dir}")
    digest = _sha256(weights)
    if digest != manifest["sha256"]:
        raise ConfigError(
            f"{weights} has sha256 {digest[:16]}..., its manifest says "
            f"{manifest['sha256'][:16]}...: the shipped demo SAE is damaged; reinstall "
            "saexplain-demo"
        )
    target = Path(cache_dir) / _SAE_DIR / f"shipped-{digest[:16]}"
    if (target / "cfg.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tensors = {k: v.float() for k, v in load_file(str(weights)).items()}
        save_file(tensors, str(staging / "sae_weights.safetensors"))
        (staging / "cfg.json").write_text(json.dumps(manifest["cfg"], indent=2))
        (staging / _STATS_FILE).write_text(json.dumps(manifest, indent=2))
        if not (target / "cfg.json").is_file():  # another process may have finished first
            publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def shipped_sae_dir(
    cache_dir: str | Path, settings: DemoSAESettings, backend: Any, data_dir: Path = _DATA
) -> Path | None:
    """The shipped SAE's folder (see `load_shipped`) when it was made with `settings` on
    `backend`'s weights; None when it was not (the caller trains instead)."""
    manifest = shipped_manifest(data_dir)
    if manifest is None or manifest["settings"] != asdict(settings):
        return None
    if manifest["model"] != f"{backend.model_id}:{model_fingerprint(backend)}":
        return None
    return load_shipped(cache_dir, data_dir)


def ship_sae(coder_dir: Path, out_dir: Path, settings: DemoSAESettings, backend: Any) -> Path:
    """Write the trained SAE in `coder_dir` (a SAELens folder) to `out_dir` as the shipped SAE:
    float16 weights (half the size; the demo loads them back as float32) and the manifest."""
    from safetensors.torch import load_file, save_file

    tensors = {
        k: v.half().contiguous()
        for k, v in load_file(str(coder_dir / "sae_weights.safetensors")).items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{SHIPPED}.safetensors"
    save_file(tensors, str(weights))
    cfg = json.loads((coder_dir / "cfg.json").read_text())
    record = json.loads((coder_dir / _STATS_FILE).read_text())
    manifest = {
        "settings": asdict(settings),
        "model": f"{backend.model_id}:{model_fingerprint(backend)}",
        "sha256": _sha256(weights),
        "cfg": cfg,
        "stats": record["stats"],
        "trained_with": {k: record[k] for k in ("sae_lens", "torch", "n_contexts")},
        "command": "python -m saexplain_demo.train --ship <dir>"
        + "".join(
            f" --{f.name.replace('_', '-')} {getattr(settings, f.name)}"
            for f in fields(settings)
            if getattr(settings, f.name) != getattr(DemoSAESettings(), f.name)
        ),
    }
    (out_dir / f"{SHIPPED}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m saexplain_demo.train --ship DIR [--n-train-tokens N ...]`: train the demo SAE
    on SmolLM2 (every `DemoSAESettings` field is an option) and write it to DIR as the shipped
    SAE."""
    import argparse

    from saexplain.testing import set_offline_env

    set_offline_env()
    parser = argparse.ArgumentParser(
        prog="python -m saexplain_demo.train", description=main.__doc__
    )
    parser.add_argument("--ship", type=Path, required=True, help="folder to write the SAE to")
    defaults = DemoSAESettings()
    for f in fields(DemoSAESettings):
        default = getattr(defaults, f.name)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    settings = DemoSAESettings(**{f.name: getattr(args, f.name) for f in fields(DemoSAESettings)})
    backend = demo_backend()
    settings.validate(int(backend.n_layers))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "sae"
        _train_into(target, backend, settings, demo_corpus(), progress=True)
        weights = ship_sae(target, args.ship, settings, backend)
    print(f"wrote {weights} ({weights.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
