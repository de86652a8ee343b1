"""The registries (bench_lib.registry): one name per class, lazy built-in entries, did-you-mean, and plug-ins: an
installed distribution's entry points add an editor, a judge, a protocol and a dataset format that the command
line then runs like built-in ones."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT
from PIL import Image, ImageOps

from bench_lib.backends import Editor, EditResult
from bench_lib.config import ConfigError
from bench_lib.registry import FORMATS, JUDGES, REGISTRIES, Registry


class Plain(Editor):
    """A plain editor: its docstring's first line describes it.

    More text that is not the description."""

    def edit(self, sample, source, *, seed):
        return EditResult(source)


class Other(Plain):
    description = "described by its attribute"


def test_a_name_is_taken_once_and_a_lookup_names_what_there_is():
    registry = Registry("gadget", base="bench_lib.backends:Editor", builtins={"plain": f"{__name__}:Plain"})
    assert registry.names() == ["plain"] and registry.get("plain") is Plain and Plain.name == "plain"
    registry.register("plain", Plain)  # the same class again is fine
    with pytest.raises(ValueError, match="'plain' is already registered"):
        registry.register("plain", Other)
    registry.register("other", Other)
    assert registry.description("plain") == "A plain editor: its docstring's first line describes it."
    assert registry.description("other") == "described by its attribute"
    with pytest.raises(ConfigError, match=r"unknown gadget 'plian' \(did you mean 'plain'\?\); known: \['plain', "
                                          r"'other'\]"):
        registry.get("plian")
    with pytest.raises(TypeError, match="must subclass Editor"):
        registry.register("judge", JUDGES.get("qwen_vl"))
    assert "judge" not in registry


def test_importing_the_package_and_listing_names_loads_no_backend():
    code = ("import sys, bench_lib, bench_lib.options\n"
            "from bench_lib.registry import REGISTRIES\n"
            "names = {kind: r.names() for kind, r in REGISTRIES.items()}\n"
            "print(sorted(m for m in sys.modules if m.startswith(('bench_lib.editors.', 'bench_lib.judges.', "
            "'bench_lib.protocols.', 'bench_lib.formats.', 'bench_lib.demo', 'torch'))))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_built_in_entry_loads_under_its_own_name():
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            if registry.is_builtin(name):
                cls = registry.get(name)
                assert cls.name == name and registry.description(name), (kind, name)
    assert FORMATS.get("gedit").priority < FORMATS.get("datasets").priority  # `auto` asks gedit first


# --- a plug-in distribution ---------------------------------------------------------------------------------

PLUGIN = {
    "example_plugin/__init__.py": "",
    "example_plugin/editor.py": """
        from dataclasses import dataclass

        from PIL import ImageOps

        from bench_lib.backends import Editor, EditResult
        from bench_lib.config import option


        @dataclass
        class InvertConfig:
            example_invert: bool = option(True, result=True, help="Invert the colours (else return the source).")


        class InvertEditor(Editor):
            description = "inverts the source's colours"
            Config = InvertConfig
            needs_model = False

            def edit(self, sample, source, *, seed):
                return EditResult(ImageOps.invert(source) if self.cfg.example_invert else source.copy())
        """,
    # the judge is the suite's scripted test double, installed as a plug-in
    "example_plugin/judge.py": """
        from test_judge_stage import ScriptedJudge


        class PluginJudge(ScriptedJudge):
            description = "answers 5 to every question"
        """,
    "example_plugin/protocol.py": """
        from bench_lib.protocols.default import DefaultProtocol


        class PluginProtocol(DefaultProtocol):
            \"\"\"The default protocol under another name.\"\"\"
        """,
    "example_plugin/lines.py": """
        import hashlib
        from pathlib import Path

        from bench_lib.data import ManifestTable
        from bench_lib.formats.base import Format


        class Lines(Format):
            description = "one sample per line: id|category|instruction|image"
            priority = 5

            @classmethod
            def detect(cls, cfg):
                return Path(cfg.dataset).suffix == ".lines"

            @classmethod
            def read(cls, cfg):
                path = Path(cfg.dataset)
                rows = [dict(zip(("id", "category", "instruction", "source_image"), line.split("|")))
                        for line in path.read_text().splitlines() if line.strip()]
                return ManifestTable(rows, base=path.parent, name=str(path),
                                     identity="sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())
        """,
}
ENTRY_POINTS = """
    [edit_bench.editors]
    example-invert = example_plugin.editor:InvertEditor

    [edit_bench.judges]
    example-judge = example_plugin.judge:PluginJudge

    [edit_bench.protocols]
    example-protocol = example_plugin.protocol:PluginProtocol

    [edit_bench.formats]
    example-lines = example_plugin.lines:Lines
    """


def install(site, name: str, entry_points: str, files: dict[str, str]) -> None:
    """An installed distribution as pip lays it out: its modules and a `.dist-info` with its entry points."""
    for path, text in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(textwrap.dedent(text))
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def run_cli(site, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "tests"), str(ROOT)])}
    return subprocess.run([sys.executable, "run_benchmark.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_plugin_distribution_adds_an_editor_a_judge_a_protocol_and_a_format(tmp_path):
    site = tmp_path / "site"
    install(site, "edit-bench-example", ENTRY_POINTS, PLUGIN)
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (24, 16), (200, 30, 60)).save(data / "a.png")
    (data / "samples.lines").write_text("s1|physics|make it blue|a.png\ns2|social|make it green|a.png\n")
    out = tmp_path / "out"

    help_text = run_cli(site, "--help").stdout  # the plug-ins' names, descriptions and keys, as built-in ones
    for fragment in ("example-invert (inverts the source's colours)", "example-judge (answers 5 to every question)",
                     "example-protocol (The default protocol under another name)", "--example_invert",
                     "example-lines (one sample per line: id|category|instruction|image)"):
        assert fragment in " ".join(help_text.split()), fragment

    result = run_cli(site, "--dataset", str(data / "samples.lines"), "--editor", "example-invert", "--judge",
                     "example-judge", "--protocol", "example-protocol", "--baselines", "", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"], r["score"]) for r in rows] == [("s1", "ok", 5.0), ("s2", "ok", 5.0)]
    with Image.open(data / "a.png") as source, Image.open(out / rows[0]["edited_image"]) as edited:
        assert edited.convert("RGB").tobytes() == ImageOps.invert(source.convert("RGB")).tobytes()
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["name"] == "example-protocol"
    run = json.loads((out / "run.json").read_text())
    assert run["fingerprint"]["editor"]["example-invert"] == {"example_invert": True}
    assert run["fingerprint"]["judge"]["judge"] == "example-judge"

    result = run_cli(site, "--dataset", str(data / "samples.lines"), "--editor", "example-invrt")
    assert result.returncode == 2 and "did you mean 'example-invert'" in result.stderr, result.stderr


def test_a_plugin_may_not_take_a_built_in_name(tmp_path):
    site = tmp_path / "site"
    install(site, "edit-bench-example", ENTRY_POINTS, PLUGIN)
    install(site, "edit-bench-squatter", "[edit_bench.editors]\ndiffusers = example_plugin.editor:InvertEditor\n",
            {})
    result = run_cli(site, "--editor", "identity", "--output_dir", str(tmp_path / "out"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "example_plugin.editor:InvertEditor, from the distribution 'edit-bench-squatter'" in errors[0]
    assert "the built-in bench_lib.editors.diffusers_pipeline:DiffusersEditor" in errors[0]
    assert not (tmp_path / "out").exists()


def test_a_plugin_is_found_once_and_loaded_when_its_name_is_used(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install(site, "edit-bench-example", ENTRY_POINTS, PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry("editor", base="bench_lib.backends:Editor", group="edit_bench.editors",
                        builtins={"identity": "bench_lib.editors.baselines:IdentityEditor"})
    assert registry.names() == ["identity", "example-invert"]
    assert "example_plugin.editor" not in sys.modules
    cls = registry.get("example-invert")
    assert cls.__module__ == "example_plugin.editor" and cls.name == "example-invert"
