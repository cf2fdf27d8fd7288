"""`import saexplain` and `saexplain --help` must stay light: no heavy library gets imported."""

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "litellm",
    "nnsight",
    "transformer_lens",
    "sae_lens",
    "sentence_transformers",
    "transformers",
]

PROBE = """
import json, sys
{body}
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))
"""


def imported_after(body: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_saexplain_is_light():
    loaded = imported_after("import saexplain\nsaexplain.hookimpl")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "pydantic" not in loaded  # even the data model loads only on first use


def test_cli_help_is_light():
    body = (
        "from saexplain.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    loaded = imported_after(body)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_listing_plugins_imports_no_heavy_library():
    # Installed plugins are imported here: their modules must defer heavy imports to factories.
    body = (
        "from saexplain.cli import main\nimport contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['plugins'])"
    )
    loaded = imported_after(body)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
