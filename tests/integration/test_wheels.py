"""The README's user install works from built wheels: the core and the torch + nnsight plugins,
built as wheels and installed into a fresh virtual environment, explain latents there.

Offline and quick: the wheels are built without build isolation (setuptools and wheel are in the
development environment) and installed as `saexplain[nnsight]` with `--no-index`; the heavy
libraries they need (torch, nnsight, transformers) come from the development environment through a
`.pth` file naming a view of its site-packages without any saexplain distribution, so every
saexplain module the run imports comes from the wheels, never from this source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("saexplain_nnsight")
pytest.importorskip("setuptools")
pytest.importorskip("wheel")

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("saexplain-torch", "saexplain-nnsight")
# What a build must not copy (caches, build output) or see (another engineer's build files).
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*", "tests")

# Run inside the fresh environment: the nnsight-alone explain on a tiny model, with a scripted LLM.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from importlib.metadata import entry_points

    import saexplain as sx
    import saexplain_nnsight, saexplain_torch
    from saexplain.testing import (
        ScriptedProvider, competent_explainer, competent_scorer_provider, synthetic_corpus,
    )
    from saexplain_torch.testing import gpt2_tokenizer, make_coder, plant, tiny_gpt2

    words = {3: " cat", 7: " river"}
    tok, hf = gpt2_tokenizer(), tiny_gpt2()
    coder = make_coder(64, 16, "blocks.0.hook_resid_pre", seed=1)
    plant(coder, hf.transformer.wte.weight, {k: tok(w)["input_ids"][0] for k, w in words.items()})
    texts = synthetic_corpus(
        120, seed=0, vocab=["cat", "river", "the", "a", "sat", "ran", "on", "red", "big", "tree"]
    )
    results = sx.explain(
        hf, coder, tokenizer=tok, backend="nnsight", latents=sorted(words),
        explainers=["maxact"], scorers=["detection"],
        provider=ScriptedProvider(competent_explainer),
        scorer_provider=competent_scorer_provider(),
        dataset=texts, n_tokens=32 * 100, context_length=32,
        records={"window": 16, "explanation": ["top:8"], "scoring": ["quantile:6"],
                 "negatives": ["random:6"], "rare_below": 2},
        output_dir=sys.argv[1], progress=False,
    )
    print(json.dumps({
        "files": {m.__name__: m.__file__ for m in (sx, saexplain_torch, saexplain_nnsight)},
        "plugins": sorted(ep.name for ep in entry_points(group="saexplain")),
        "explanations": {k: results[k].explanation("maxact") for k in words},
        "scores": {k: results[k].score("maxact", "detection") for k in words},
    }))
    """
)


def _run(*command: object, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)


def _shared_view(tmp_path: Path) -> Path:
    """The development environment's site-packages without saexplain's own distributions, their
    editable-install hooks or any `.pth` file: links to everything else."""
    shared = Path(sysconfig.get_paths()["purelib"])
    view = tmp_path / "shared-site-packages"
    view.mkdir()
    for entry in shared.iterdir():
        name = entry.name.lower()
        if name.startswith(("saexplain", "__editable__")) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    return view


def _build_wheels(tmp_path: Path) -> Path:
    """Wheels of the core and the plugins, built from copies so the checkout gets no build files."""
    sources = tmp_path / "src"
    shutil.copytree(ROOT / "src", sources / "core" / "src", ignore=IGNORE)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, sources / "core" / name)
    for plugin in PLUGINS:
        shutil.copytree(ROOT / "plugins" / plugin, sources / plugin, ignore=IGNORE)
    wheels = tmp_path / "wheels"
    pip_wheel = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    targets = [sources / "core", *(sources / plugin for plugin in PLUGINS)]
    built = _run(sys.executable, "-m", *pip_wheel, "-w", wheels, *targets, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    return wheels


def test_wheels_install_into_a_fresh_environment_and_explain(tmp_path):
    wheels = _build_wheels(tmp_path)
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == ["saexplain", "saexplain_nnsight", "saexplain_torch"]

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = _run(python, "-c", where, check=True, cwd=tmp_path).stdout.strip()
    Path(purelib, "shared.pth").write_text(f"{_shared_view(tmp_path)}\n", encoding="utf-8")
    # As the README says, the extra brings the plugins; their heavy dependencies are satisfied
    # by the shared view, and the plugins themselves can come only from the wheels.
    pip = [sys.executable, "-m", "pip", "--python", python]
    install = _run(*pip, "install", "--no-index", "--find-links", wheels, "saexplain[nnsight]")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert "does not provide the extra" not in install.stdout + install.stderr

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    environ["SAEXPLAIN_STRICT_PLUGINS"] = "1"  # a plugin that cannot load fails the run
    script = tmp_path / "explain.py"
    script.write_text(SCRIPT, encoding="utf-8")
    run = _run(python, script, tmp_path / "runs", cwd=tmp_path, env=environ, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])

    for module, file in out["files"].items():  # the wheels' code, not this checkout's
        assert Path(file).is_relative_to(purelib), (module, file)
        assert not Path(file).is_relative_to(ROOT), (module, file)
    assert out["plugins"] == ["nnsight", "torch"]
    for latent, word in {"3": "cat", "7": "river"}.items():
        assert word in (out["explanations"][latent] or "").lower()
        assert (out["scores"][latent] or 0) > 0.8
