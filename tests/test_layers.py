"""The import graph only looks down (scripts/check_imports.py, also run by CI before the tests): no cycle counting
every import statement wherever it is, config.py a leaf, nothing importing the package itself or the tiny
models' builders."""

import subprocess
import sys
import textwrap

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_imports  # noqa: E402


def test_bench_lib_has_no_cycle_and_config_is_a_leaf():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_imports.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no cycle" in result.stdout
    edges = check_imports.graph()
    assert edges["bench_lib.config"] == {}
    assert "bench_lib.runner" not in edges["bench_lib.sweep"]  # a run is a sweep of one unit: sweep is below runner
    assert "bench_lib.demo.tiny" not in edges["bench_lib.models"]  # named by string, imported only when built


def write_package(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "bench_lib" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checker_counts_imports_inside_functions_and_type_checking_blocks(tmp_path):
    write_package(tmp_path, {
        "__init__.py": "from .config import Thing\n",
        "config.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .backends import Backend
            """,
        "backends.py": "from .config import Thing\n",
        "runner.py": "from . import sweep\n",
        "sweep.py": """
            def run():
                from .runner import go
            """,
        "report.py": "from bench_lib import Thing\n",
        "judges/__init__.py": "from . import qwen\n",
        "judges/qwen.py": "from ..editors.pipeline import free\n",
        "editors/__init__.py": "",
        "editors/pipeline.py": "import bench_lib.judges.common\n",
        "judges/common.py": "",
        "models.py": "from .demo import tiny\n",
        "demo/__init__.py": "",
        "demo/tiny.py": "from ..models import build\n",
        "data.py": "import importlib\nimportlib.import_module('bench_lib.runner')  # a registry's entry: not an edge\n",
    })
    problems = check_imports.problems(tmp_path)
    text = "\n".join(problems)
    cycles = [p for p in problems if p.startswith("cycle")]
    # config <-> backends (TYPE_CHECKING), runner <-> sweep (in a function), judges.qwen -> editors.pipeline ->
    # judges.common, whose package judges imports qwen; models <-> demo.tiny
    assert len(cycles) == 4, text
    assert any("bench_lib.backends, bench_lib.config" in c for c in cycles)
    assert any("bench_lib.runner, bench_lib.sweep" in c for c in cycles)
    assert any("bench_lib.editors.pipeline" in c and "bench_lib.judges.qwen" in c for c in cycles)
    assert "bench_lib/config.py must import no bench_lib module; it imports bench_lib.backends (line 4)" in text
    assert "bench_lib/report.py imports the package bench_lib itself" in text
    assert "bench_lib/models.py imports bench_lib.demo.tiny (line 1)" in text
    assert "bench_lib.data" not in text
    write_package(tmp_path, {"config.py": "", "sweep.py": "", "report.py": "from .config import Thing\n",
                             "editors/pipeline.py": "", "models.py": ""})
    assert check_imports.problems(tmp_path) == []
