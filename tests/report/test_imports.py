import json
import subprocess
import sys


def loaded_after(body: str) -> set[str]:
    probe = f"import json, sys\n{body}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_report_is_lazy_and_light():
    assert "saexplain.report" not in loaded_after("import saexplain")
    loaded = loaded_after("import saexplain.report")
    assert not loaded & {"pandas", "torch", "matplotlib", "transformers", "litellm"}
