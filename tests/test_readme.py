"""The README's offline command, run as written (plus a temporary --output_dir)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, f"README has no command after <!-- {marker} -->"
    return match.group(1).strip()


def test_offline_command_from_readme(tmp_path):
    command = readme_command("offline-run")
    assert "accelerate launch" in command and "run_benchmark.py" in command
    out = tmp_path / "smoke"
    # As in a shell with the project's virtual environment activated.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", f"{command} --output_dir {shlex.quote(str(out))}"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-8000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["categories"]) == {"physics", "environment", "social", "causal", "referential"}
    assert report["meta"]["world_size"] == 2
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["status"] == "ok" and 0 <= r["score"] <= 10 for r in rows)
    assert all((out / r["edited_image"]).is_file() for r in rows)
    assert "| **overall** |" in (out / "report.md").read_text()
    assert "running the offline smoke recipe" in result.stderr


def test_every_config_key_is_documented():
    from bench_lib.options import config_fields

    text = (ROOT / "README.md").read_text()
    missing = [key for key in config_fields() if f"| `{key}` |" not in text]
    assert not missing, f"config keys missing from the README's table: {missing}"


def test_the_registry_table_is_written_from_the_registries():
    sys.path.insert(0, str(ROOT / "scripts"))
    import readme_tables

    from bench_lib.registry import REGISTRIES

    text = (ROOT / "README.md").read_text()
    assert readme_tables.render(text) == text, "README.md is out of date: run python scripts/readme_tables.py"
    table = readme_tables.registry_table()
    for registry in REGISTRIES.values():
        for name in registry.names():
            if registry.is_builtin(name):
                assert f"| `{name}` " in table and registry.description(name).rstrip(".") in table, name


def test_every_format_and_protocol_has_its_row_in_benchmarks():
    from bench_lib.registry import FORMATS, PROTOCOLS

    text = (ROOT / "README.md").read_text()
    benchmarks = text[text.index("## Benchmarks"):text.index("## Configuration")]
    for registry, generic in ((FORMATS, {"manifest", "datasets"}), (PROTOCOLS, set())):
        missing = [n for n in registry.names() if registry.is_builtin(n) and n not in generic
                   and f"\n| `{n}` |" not in benchmarks]
        assert not missing, f"README's Benchmarks section has no row for {missing}"
