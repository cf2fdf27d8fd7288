"""`saexplain run` against a running Ray cluster: a head node started here with the `ray` CLI
(`ray start --head --num-cpus 2`), a run config naming `executor: {name: ray, address: auto}`,
and `saexplain run <config>` in a fresh process (the cluster found through `RAY_ADDRESS`). Its
results equal those of the same config run in-process.

The toy world is loaded by name (backend `toyfake`, coder `toyplanted`, provider `toyllm`,
dataset `toycorpus`: `saexplain.testing.toy.Stack`) through a small plugin announced by an entry
point in a folder on `PYTHONPATH`, as an installed plugin is; the cluster's workers get the same
path, so the store is collected on the cluster too (`test_ray_collect.py` checks that part).

The head is started with `--block` in its own process group and stopped by signalling that group
(not with `ray stop`, which stops every Ray process of the machine, other people's included)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from saexplain.testing import OFFLINE_ENV

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")

PLUGIN = '''
"""The toy world of `saexplain.testing.toy`, loadable by name from a run config."""

import saexplain
from saexplain.testing import toy
from saexplain.testing.toy import register_explainers, register_scorers  # noqa: F401

_stack = toy.Stack()


@saexplain.hookimpl
def register_backends(register):
    _stack.register_backends(register)


@saexplain.hookimpl
def register_coders(register):
    _stack.register_coders(register)


@saexplain.hookimpl
def register_providers(register):
    _stack.register_providers(register)


@saexplain.hookimpl
def register_datasets(register):
    _stack.register_datasets(register)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding the toy plugin as an installed distribution."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "saexplain_toyrun.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "saexplain_toyrun-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: saexplain-toyrun\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[saexplain]\ntoyrun = saexplain_toyrun\n", encoding="utf-8"
    )
    return site


def environment(site: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAEXPLAIN_", "RAY_"))}
    env.update(OFFLINE_ENV)
    env.update(
        PYTHONPATH=str(site),
        SAEXPLAIN_CACHE_DIR=str(cache),  # the response cache
        SAEXPLAIN_PLUGINS="toyrun,ray",  # the plugins this run needs, no torch stack
        SAEXPLAIN_STRICT_PLUGINS="1",
        # a loopback test cluster: no token to hand around (Ray >= 2.5x enables token auth)
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


@pytest.fixture
def head(site: Path, tmp_path: Path) -> Iterator[str]:
    """A Ray head node of 2 CPUs, its address; stopped whatever the test did."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="rayt", dir="/tmp"))  # short: Ray's socket paths
    command = [
        str(RAY),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--port={port}",
        "--include-dashboard=false",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp}",
    ]
    log = (tmp_path / "head.log").open("w")
    proc = subprocess.Popen(
        command,
        # the workers it starts import the toy plugin too, and have their own response cache
        env=environment(site, tmp_path / "cache-cluster"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped below, and only it
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while not (temp / "session_latest").exists() or not _listening(port):
            assert proc.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not start in 40 s"
            time.sleep(0.2)
        yield address
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the head's process group (`ray start --block` then stops what it started),
    then, after a few seconds (Ray would drain for 30), SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def config(tmp_path: Path, name: str, **extra: Any) -> Path:
    cfg = {
        "model": "toy",
        "backend": "toyfake",
        "coder": "toyplanted:all",
        "dataset": "toycorpus",
        "n_tokens": 32 * 200,
        "context_length": 32,
        "latents": {"indices": [1, 2, 3, 5, 7]},
        "explainers": ["toy"],
        "scorers": ["toyscore"],
        "explainer_model": {"provider": "toyllm", "model": "toy"},
        "records": {
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        "concurrency": 4,
        "output_dir": str(tmp_path / "runs"),
        "name": name,
        **extra,
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def saexplain_run(cfg: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "saexplain.cli", "run", str(cfg), "-q"],
        env=env,
        cwd=cfg.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def results(run_dir: Path) -> tuple[list[Any], list[Any]]:
    def read(file: str, *fields: str) -> list[Any]:
        lines = (run_dir / file).read_text().splitlines()
        return sorted(
            tuple(json.dumps(rec.get(f), sort_keys=True) for f in fields)
            for rec in map(json.loads, lines)
        )

    explanations = read("explanations.jsonl", "latent", "explainer", "text", "status")
    scores = read("scores.jsonl", "latent", "explainer", "scorer", "value", "status")
    return explanations, scores


def test_saexplain_run_against_a_running_cluster_equals_in_process(
    head: str, site: Path, tmp_path: Path
) -> None:
    env = environment(site, tmp_path / "cache-driver")
    saexplain_run(config(tmp_path, "local"), env)
    executor = {"name": "ray", "address": "auto", "workers": 2}
    ray_cfg = config(tmp_path, "ray", executor=executor)  # collected on the cluster too
    saexplain_run(ray_cfg, {**env, "RAY_ADDRESS": head})

    local, remote = tmp_path / "runs" / "local", tmp_path / "runs" / "ray"
    shards = sorted(p.name for p in (remote / "store" / "shards").iterdir())
    assert shards and all(n.startswith("s") for n in shards), shards  # slices of the workers
    local_e, local_s = results(local)
    ray_e, ray_s = results(remote)
    assert len(ray_e) == 5 and len(ray_s) == 5  # each pair once
    assert ray_e == local_e and ray_s == local_s
    assert all('"ok"' in s[-1] for s in ray_s)
    spent = [json.loads((d / "spend.json").read_text())["spent_usd"] for d in (local, remote)]
    assert spent[1] == pytest.approx(spent[0]) and spent[0] > 0
    manifest = json.loads((remote / "manifest.json").read_text())
    assert (
        manifest["provider_calls"]["calls"]
        == json.loads((local / "manifest.json").read_text())["provider_calls"]["calls"]
    )
