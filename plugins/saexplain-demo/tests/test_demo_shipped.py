"""The demo SAE that ships with the package: present, digest-checked, made with the settings the
demo runs with, loaded as float32 without training (seconds; no SmolLM2 needed)."""

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from saexplain_demo import train as demo
from saexplain_demo.config import demo_config
from saexplain_saelens.coders import SAELensCoder
from saexplain_torch.testing import gpt2_tokenizer, tiny_llama

from saexplain.errors import ConfigError

nn_backend = pytest.importorskip("saexplain_nnsight.backend")

DATA = Path(demo.__file__).resolve().parent / "data"


def test_the_shipped_sae_is_the_one_the_demo_config_asks_for():
    manifest = demo.shipped_manifest()
    assert manifest is not None, "no demo SAE ships in saexplain_demo/data"
    weights = DATA / f"{demo.SHIPPED}.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == manifest["sha256"]
    # the demo's coder settings (none given: DemoSAESettings' defaults) made the shipped file
    config = demo_config()
    assert config.coder == "demo:"
    assert manifest["settings"] == asdict(demo.DemoSAESettings(**config.coder_settings))
    assert demo_config(quick=True).coder_settings == config.coder_settings
    assert manifest["model"].startswith("SmolLM2-135M-Instruct:")
    assert manifest["command"].startswith("python -m saexplain_demo.train --ship")
    assert weights.stat().st_size < 8 * 2**20  # a few MB: float16


def test_the_shipped_sae_loads_as_a_float32_saelens_coder(tmp_path):
    folder = demo.load_shipped(tmp_path)
    coder = SAELensCoder.from_disk(folder, id="demo-shipped")
    settings = demo.DemoSAESettings()
    assert coder.hook == f"blocks.{settings.layer}.hook_resid_pre"
    assert coder.d_sae == settings.expansion * 576 and coder.architecture == "topk"
    assert coder.sae.W_dec.dtype == torch.float32
    norms = coder.sae.W_dec.detach().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)  # unit rows, in float16
    # top-k: at most k latents fire on any input
    with torch.no_grad():
        z = coder.encode(torch.randn(8, 576) * 3)
    assert int((z > 0).sum(-1).max()) <= settings.k
    # a second load reuses the converted folder
    assert demo.load_shipped(tmp_path) == folder


def test_a_damaged_shipped_file_is_refused(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    weights = data / f"{demo.SHIPPED}.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="damaged"):
        demo.load_shipped(tmp_path / "cache", data_dir=data)
    manifest = json.loads((data / f"{demo.SHIPPED}.json").read_text())
    assert manifest["sha256"] != hashlib.sha256(bytes(raw)).hexdigest()


def test_other_settings_or_another_model_do_not_get_the_shipped_sae(tmp_path):
    tiny = nn_backend.NNsightBackend(tiny_llama(n_layer=2, d_model=64), tokenizer=gpt2_tokenizer())
    # the demo's settings on another model's weights: its fingerprint differs
    assert demo.shipped_sae_dir(tmp_path, demo.DemoSAESettings(), tiny) is None
    assert demo.shipped_sae_dir(tmp_path, demo.DemoSAESettings(seed=1), tiny) is None
    assert not (tmp_path / "demo-sae").exists()


def test_the_wheel_carries_the_shipped_sae(tmp_path):
    """pyproject's package-data: an installed demo has its SAE (pip builds a wheel offline)."""
    import subprocess
    import sys
    import zipfile

    setuptools = pytest.importorskip("setuptools")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        # a bare venv's bundled setuptools needs `wheel` to build one; the shared .venv (the
        # integration session) has a newer setuptools and runs this test
        pytest.importorskip("wheel")
    plugin = Path(demo.__file__).resolve().parents[2]
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*", "tests")
    shutil.copytree(plugin, source, ignore=ignore)
    pip_wheel = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", *pip_wheel, "-w", str(tmp_path / "wheels"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheels").glob("saexplain_demo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for suffix in ("safetensors", "json"):
        assert f"saexplain_demo/data/{demo.SHIPPED}.{suffix}" in names
