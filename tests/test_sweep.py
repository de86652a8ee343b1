"""A sweep of checkpoints in one job: each variant equals a single run with its adapter, the base pipeline and the
judge load once per rank, the sanity baselines are judged once, a grown folder only adds work, a killed sweep
resumes to the uninterrupted result, and the sweep report's paired tests are compare_runs'."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from launch import ROOT, TINY_ARGS, accelerate_launch
from test_multiprocess import make_manifest

from bench_lib.config import ConfigError
from bench_lib.options import parse_config
from bench_lib.store import read_results
from bench_lib.sweep import expand, natural_key

COMMON = [*TINY_ARGS, "--edit_batch_size", "1", "--judge_batch_size", "2"]


def build_adapters(folder: Path, steps) -> Path:
    from bench_lib.demo.tiny import build_lora

    for step in steps:
        build_lora(folder / f"step-{step}", seed=step, base="flux-kontext")  # launch.TINY_ARGS's editor
    return folder


def single_runs(runs: dict[str, list[str]]) -> None:
    """Plain runs, one after another in one fresh single-threaded process (as a launched worker computes)."""
    code = "import sys, json\nfrom bench_lib.cli import main\nfor args in json.loads(sys.argv[1]):\n" \
           "    assert main(args) == 0, args\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, json.dumps(list(runs.values()))], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]


def assert_same_variant(a: Path, b: Path, *, first: int = 0) -> None:
    """Variant folder `a` has b's rows (its first `first` rows, when b ran on only those samples)."""
    rows_a, rows_b = read_results(a / "results.jsonl"), read_results(b / "results.jsonl")
    rows_a = rows_a[:first] if first else rows_a
    assert [r["id"] for r in rows_a] == [r["id"] for r in rows_b]
    for x, y in zip(rows_a, rows_b):
        assert x["status"] == y["status"] == "ok"
        assert (a / x["edited_image"]).read_bytes() == (b / y["edited_image"]).read_bytes()  # bitwise
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)
        assert x["metrics"] == pytest.approx(y["metrics"], abs=1e-4)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 3-variant sweep (base and two adapters) of 2 samples on 2 processes, loads counted."""
    tmp = tmp_path_factory.mktemp("sweep")
    adapters = build_adapters(tmp / "adapters", (200, 100))
    manifest = make_manifest(tmp, 2)
    out = tmp / "sweep"
    args = ["--dataset", str(manifest), *COMMON, "--sweep", str(adapters)]
    accelerate_launch(2, [*args, "--output_dir", str(out)], timeout=600, env={"BENCH_TEST_COUNT_LOADS": "1"})
    return {"tmp": tmp, "adapters": adapters, "manifest": manifest, "out": out, "args": args}


def test_each_variant_is_a_single_run_and_models_load_once(sweep):
    out, tmp = sweep["out"], sweep["tmp"]
    report = json.loads((out / "sweep.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["base", "step-100", "step-200"]  # natural order, base first
    markers = [json.loads(p.read_text()) for p in sorted(out.glob("worker-*.json"))]
    assert [m["world_size"] for m in markers] == [2, 2]
    # One base pipeline and one judge per rank for the whole sweep; the adapters were swapped in place.
    assert [m["loads"] for m in markers] == [{"pipelines": 1, "judges": 1}] * 2
    assert [r["adapter_swaps"] for r in report["timings"]["per_rank"]] == [2, 2]
    base = ["--dataset", str(sweep["manifest"]), *COMMON, "--limit", "1"]  # a sample's edit is its own
    single_runs({"base": [*base, "--output_dir", str(tmp / "single-base")],
                 **{name: [*base, "--lora", str(sweep["adapters"] / name), "--output_dir", str(tmp / f"single-{name}")]
                    for name in ("step-100", "step-200")}})
    for name in ("base", "step-100", "step-200"):
        assert_same_variant(out / name, tmp / f"single-{name}", first=1)
        # a variant folder is a plain run's: same fingerprint, so a plain run could resume it
        assert json.loads((out / name / "run.json").read_text())["fingerprint"] == \
            json.loads((tmp / f"single-{name}" / "run.json").read_text())["fingerprint"]
    edits = {name: (out / name / "edits" / "physics_01.png").read_bytes() for name in ("base", "step-100", "step-200")}
    assert len(set(edits.values())) == 3  # the adapters really change the edits


def test_baselines_are_judged_once_and_every_variant_reports_them(sweep):
    out = sweep["out"]
    report = json.loads((out / "sweep.json").read_text())
    assert report["timings"]["judged"] == 3 * 2 + 2 * 2  # three variants' edits, each baseline once
    base_rows = read_results(out / "base" / "baselines" / "identity.jsonl")
    for name in ("step-100", "step-200"):
        rows = read_results(out / name / "baselines" / "identity.jsonl")
        assert [r["score"] for r in rows] == [r["score"] for r in base_rows]
        variant = json.loads((out / name / "report.json").read_text())
        assert variant["baselines"]["identity"]["overall"]["count"] == 2


def test_sweep_report_matches_compare_runs(sweep, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare_runs

    from bench_lib import compare

    out = sweep["out"]
    report = json.loads((out / "sweep.json").read_text())
    for metric in report["metrics"]:
        assert compare_runs.main([str(out / "base"), str(out / "step-200"), "--metric", metric, "--json",
                                  str(tmp_path / "c.json")]) == 0
        expected = json.loads((tmp_path / "c.json").read_text())["overall"]
        got = report["variants"][2]["vs_reference"][metric]
        assert {k: got[k] for k in expected} == expected
    best = report["best"]["score"]
    ranked = sorted(report["variants"], key=lambda v: -v["metrics"]["score"]["mean"])
    assert best["variant"] == ranked[0]["name"] and best["runner_up"] == ranked[1]["name"]
    runner_up_test = compare.compare(compare.load_run(out / ranked[1]["name"]), compare.load_run(out / best["variant"]))
    assert best["vs_runner_up"]["p_value"] == runner_up_test["overall"]["p_value"]
    ci, p = best["vs_runner_up"]["ci"], best["vs_runner_up"]["p_value"]
    assert best["significant"] == bool(ci and ci[0] > 0 and p is not None and p < 0.05)  # score: higher is better
    md = (out / "sweep.md").read_text()
    # a step is read from `checkpoint-N` names only (one rule for the table, the chart and the trackers)
    assert "| step-100 |  |" in md and "## Best variant per metric" in md and (out / "sweep_chart.png").is_file()


def test_a_new_adapter_adds_only_its_own_work(sweep):
    grown = sweep["tmp"] / "grown"
    shutil.copytree(sweep["out"], grown)
    for marker in grown.glob("worker-*.json"):
        marker.unlink()
    build_adapters(sweep["adapters"], (1000,))
    try:
        accelerate_launch(1, [*sweep["args"], "--output_dir", str(grown)], timeout=600,
                          env={"BENCH_TEST_COUNT_LOADS": "1"})
    finally:
        shutil.rmtree(sweep["adapters"] / "step-1000")
    report = json.loads((grown / "sweep.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["base", "step-100", "step-200", "step-1000"]
    edited = {v["name"]: v["edited"] for v in report["timings"]["variants"]}
    assert edited == {"base": 0, "step-100": 0, "step-200": 0, "step-1000": 2}
    assert report["timings"]["judged"] == 2  # the new variant's edits; baselines and old variants reused
    for name in ("base", "step-100", "step-200"):
        assert json.loads((grown / name / "report.json").read_text())["meta"]["reused_edits"] == 2
        assert read_results(grown / name / "results.jsonl") == read_results(sweep["out"] / name / "results.jsonl")
    (marker,) = [json.loads(p.read_text()) for p in grown.glob("worker-*.json")]
    assert marker["loads"] == {"pipelines": 1, "judges": 1}
    assert report["variants"][3]["vs_reference"]["score"]["n"] == 2


def test_kill_mid_sweep_then_rerun_gives_the_uninterrupted_result(sweep):
    out = sweep["tmp"] / "killed"
    # rank 1 (one sample per variant) dies after its 3rd edit, step-200's, before recording it; the per-batch
    # barrier means both ranks had finished base and step-100
    result = accelerate_launch(2, [*sweep["args"], "--output_dir", str(out), "--process_group_timeout", "60"],
                               timeout=600, check=False, env={"BENCH_TEST_KILL": "edit:1:3"})
    assert result.returncode != 0 and not (out / "sweep.json").exists()
    accelerate_launch(2, [*sweep["args"], "--output_dir", str(out)], timeout=600)
    for name in ("base", "step-100", "step-200"):
        assert_same_variant(out / name, sweep["out"] / name)
    reused = [json.loads((out / n / "report.json").read_text())["meta"]["reused_edits"]
              for n in ("base", "step-100", "step-200")]
    assert reused[:2] == [2, 2] and reused[2] < 2  # what was done before the kill was kept, the rest redone


def adapter_folder(folder: Path) -> Path:
    """A folder with the shape of an adapter (expand reads no weights)."""
    folder.mkdir(parents=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
    return folder


def test_variants_from_a_folder_a_list_and_a_recipe(tmp_path):
    for name in ("step-1000", "step-200", "step-30", ".hidden"):
        adapter_folder(tmp_path / "a" / name)
    (tmp_path / "a" / "notes.txt").write_text("not an adapter")
    cfg = parse_config(["--sweep", str(tmp_path / "a"), "--output_dir", str(tmp_path / "o")])
    variants = expand(cfg)
    assert [v.name for v in variants] == ["base", "step-30", "step-200", "step-1000"]
    assert variants[0].cfg.editor_backend.lora is None and variants[0].cfg.sweep.sweep is None
    assert variants[1].cfg.editor_backend.lora == str((tmp_path / "a" / "step-30").resolve())
    assert variants[3].cfg.run.output_dir == str(tmp_path / "o" / "step-1000")
    cfg = parse_config(["--sweep", str(tmp_path / "a"), "--sweep-base", "false", "--output_dir", str(tmp_path)])
    assert [v.name for v in expand(cfg)][0] == "step-30"
    cfg = parse_config(["--sweep", f"x={tmp_path / 'a' / 'step-30'},plain=none", "--output_dir", str(tmp_path)])
    assert [(v.name, v.cfg.editor_backend.lora) for v in expand(cfg)] == [
        ("x", str(tmp_path / "a" / "step-30")), ("plain", None)]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: x.jsonl\neditor_model: tiny:qwen-image-edit\njudge_model: tiny:qwen3-vl\n"
                      "sweep:\n  - {name: a, lora: a/step-30, lora_scale: 0.5}\n  - {name: b, lora_scale: 2}\n")
    variants = expand(parse_config(["--config", str(recipe)]))
    assert variants[0].cfg.editor_backend.lora == str((tmp_path / "a" / "step-30").resolve())  # recipe-relative
    assert (variants[0].cfg.editor_backend.lora_scale, variants[1].cfg.editor_backend.lora_scale) == (0.5, 2.0)
    assert natural_key("step-9") < natural_key("step-10")


@pytest.mark.parametrize("spec, message", [
    ("a=x,a=y", "unique"), ("bad name=x", "folder name"), ("sweep.json=x", "folder name"),
])
def test_bad_variant_names_are_refused(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        expand(parse_config(["--sweep", spec, "--output_dir", str(tmp_path)]))


def test_a_variant_sets_only_editor_keys_and_missing_adapters_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: x.jsonl\neditor_model: tiny:qwen-image-edit\njudge_model: tiny:qwen3-vl\n"
                      "sweep:\n  - {name: a, seed: 3}\n")
    with pytest.raises(ConfigError, match="sets \\['seed'\\]"):
        expand(parse_config(["--config", str(recipe)]))
    result = subprocess.run([sys.executable, "run_benchmark.py", "--sweep", f"a={tmp_path / 'nope'}", "--output_dir",
                             str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "nope" in result.stderr and "Traceback" not in result.stderr


def test_a_sweep_folder_whose_path_holds_an_equals_sign_is_a_folder(tmp_path):
    folder = tmp_path / "lr=1e-4,bs=8" / "ckpts"  # as Hydra names its output folders
    adapter_folder(folder / "step-10")
    variants = expand(parse_config(["--sweep", str(folder), "--output_dir", str(tmp_path / "o")]))
    assert [(v.name, v.cfg.editor_backend.lora) for v in variants] == [
        ("base", None), ("step-10", str((folder / "step-10").resolve()))]
    # NAME=PATH still lists adapters by hand when the text is no path that exists
    hand = adapter_folder(tmp_path / "lr=1e-3" / "step-20")
    variants = expand(parse_config(["--sweep", f"x={hand},plain=none", "--output_dir", str(tmp_path / "o")]))
    assert [(v.name, v.cfg.editor_backend.lora) for v in variants] == [("x", str(hand)), ("plain", None)]


def test_one_adapter_file_is_a_sweep_of_it_against_the_base(tmp_path):
    adapter = tmp_path / "step-500.safetensors"
    adapter.write_bytes(b"")
    variants = expand(parse_config(["--sweep", str(adapter), "--output_dir", str(tmp_path / "o")]))
    assert [(v.name, v.cfg.editor_backend.lora) for v in variants] == [("base", None), ("step-500", str(adapter))]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not an adapter"):
        expand(parse_config(["--sweep", str(tmp_path / "notes.txt"), "--output_dir", str(tmp_path / "o")]))
    with pytest.raises(ConfigError, match="no such file or folder"):
        expand(parse_config(["--sweep", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o")]))


def test_subfolders_without_an_adapter_are_named_once_and_are_not_variants(tmp_path, caplog):
    from bench_lib.preflight import preflight

    ckpts = tmp_path / "ckpts"
    adapter_folder(ckpts / "step-2")
    build_adapters(ckpts, (1,))
    (ckpts / "logs").mkdir()
    (ckpts / "logs" / "events.out").write_text("x")
    (ckpts / "runs").mkdir()
    (ckpts / "README.md").write_text("files beside the checkpoints are not variants")
    (ckpts / "training_args.bin").write_bytes(b"x")
    cfg = parse_config(["--sweep", str(ckpts), "--output_dir", str(tmp_path / "o"), "--dataset",
                        "data/demo/manifest.jsonl", "--limit", "1"])
    caplog.set_level("INFO")
    preflight(cfg)  # every variant's adapter checked: no lora_weight_name hint for logs/
    variants = expand(cfg)
    assert [v.name for v in variants] == ["base", "step-1", "step-2"]
    named = [r.getMessage() for r in caplog.records if "not variants" in r.getMessage()]
    assert len(named) == 1 and "logs/, runs/" in named[0] and "README" not in named[0]
    for name in ("logs", "runs"):
        (tmp_path / "nothing" / name).mkdir(parents=True)
    with pytest.raises(ConfigError, match="has no adapters.*subfolders hold none: logs, runs"):
        expand(parse_config(["--sweep", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o")]))


# --- in one process, with the identity editor: what a sweep leaves in its folders --------------------------------

JUDGE_ONLY = ["--judge_model", "tiny:qwen3-vl", "--judge_dtype", "float32", "--judge_min_digit_mass", "0",
              "--dataset", "data/demo/manifest.jsonl", "--limit", "1", "--gallery", "false", "--baselines", ""]


def identity_sweep(tmp_path: Path, names: list[str]) -> list[str]:
    recipe = tmp_path / f"sweep-{'-'.join(names)}.yaml"
    recipe.write_text("editor: identity\nsweep:\n" + "".join(f"  - {{name: {n}}}\n" for n in names))
    return ["--config", str(recipe), *JUDGE_ONLY]


def test_a_refused_sweep_leaves_every_variant_folder_as_it_was(tmp_path, capsys):
    from bench_lib import cli

    top = tmp_path / "sweep"
    assert cli.main([*identity_sweep(tmp_path, ["a"]), "--output_dir", str(top)]) == 0
    # b holds a run with another seed: the sweep below must refuse it, and touch neither a nor c
    assert cli.main(["--editor", "identity", *JUDGE_ONLY, "--seed", "1", "--output_dir", str(top / "b")]) == 0
    before = {p: p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    assert cli.main([*identity_sweep(tmp_path, ["a", "b", "c"]), "--output_dir", str(top)]) == 2
    after = {p: p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file() and p.name != ".lock"}
    assert after == before  # no phantom attempt in a/run.json, no folder made for c
    assert json.loads((top / "a" / "run.json").read_text())["attempts"] == 1 and not (top / "c").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.seed: 1 -> 0" in err[0], err


def test_a_killed_overwrite_sweep_leaves_no_report_and_readers_refuse_a_stale_one(tmp_path, monkeypatch):
    from bench_lib import cli, runner
    from bench_lib.store import InconsistentRun

    top = tmp_path / "sweep"
    args = [*identity_sweep(tmp_path, ["a", "b"]), "--output_dir", str(top)]
    assert cli.main(args) == 0
    assert (top / "sweep.json").is_file() and (top / "sweep.md").is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed once the variant folders were emptied

    with monkeypatch.context() as patch:
        patch.setattr(runner.JudgeStage, "run", killed)
        with pytest.raises(KeyboardInterrupt):
            cli.main([*args, "--overwrite"])
    assert not (top / "a" / "results.jsonl").exists()  # --overwrite emptied the variants ...
    assert [p.name for p in top.iterdir() if p.is_file() and p.name != ".lock"] == []  # ... and their report
    from bench_lib.sweep import read_sweep

    with pytest.raises(ConfigError, match="not a finished sweep"):
        read_sweep(top)

    assert cli.main(args) == 0  # the same command again finishes the sweep
    old_md = (top / "sweep.md").read_text()
    assert read_sweep(top)["stamp"]["variants"]["a"]["attempt"] == 2
    # a run in a variant's folder since: the sweep report no longer describes it
    assert cli.main(["--editor", "identity", *JUDGE_ONLY, "--score_formula", "mean", "--output_dir",
                     str(top / "a")]) == 0
    with pytest.raises(InconsistentRun, match="a/ \\(outputs of attempt 3, not of attempt 2\\)"):
        read_sweep(top)
    assert cli.main(args) == 0
    read_sweep(top)
    (top / "sweep.md").write_text(old_md)  # a sweep.md from another pass
    with pytest.raises(InconsistentRun, match="sweep.md"):
        read_sweep(top)


def test_a_variant_folder_that_is_a_link_is_refused(tmp_path, capsys):
    from bench_lib import cli

    top, outside = tmp_path / "sweep", tmp_path / "outside"
    outside.mkdir()
    top.mkdir()
    (top / "b").symlink_to(outside, target_is_directory=True)
    assert cli.main([*identity_sweep(tmp_path, ["a", "b"]), "--output_dir", str(top)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{top / 'b'} is a symbolic link" in err[0], err
    assert list(outside.iterdir()) == [] and not (top / "a").exists()


def test_a_sweep_writes_every_report_then_fails_if_a_variant_scored_nothing(tmp_path):
    """Rule (b) per variant: `bad` fails every sample (two error types: no early stop), `good` scores; every
    variant's reports and the sweep report are written, then the sweep fails naming `bad`."""
    from test_edit_stage import BrokenEditor, register_backends
    from test_judge_stage import ScriptedJudge, write_manifest

    import bench_lib.runner as runner
    from bench_lib.backends import EDITORS, JUDGES
    from bench_lib.failures import RunFailed
    from bench_lib.options import config_from_dict
    from bench_lib.store import read_run

    register_backends()
    BrokenEditor.mode, ScriptedJudge.mode = "fixed", "answer"
    out = tmp_path / "out"
    try:
        cfg = config_from_dict({"dataset": str(write_manifest(tmp_path / "data", 4)), "output_dir": str(out),
                                "editor": "test-broken", "judge": "test-scripted", "baselines": "identity",
                                "sweep": [{"name": "good"}, {"name": "bad", "mixed": True}]})
        with pytest.raises(RunFailed, match=r"^1 sweep variant\(s\) scored nothing: bad: none of the 4 samples is "
                                            r"ok \(4 edit_failed\)"):
            runner.run(cfg)
    finally:
        EDITORS.pop("test-broken")
        JUDGES.pop("test-scripted")
    assert [r["status"] for r in read_run(out / "good")["rows"]] == ["ok"] * 4
    assert [r["status"] for r in read_run(out / "bad")["rows"]] == ["edit_failed"] * 4
    report = json.loads((out / "sweep.json").read_text())
    assert [(v["name"], v["count"], v["failed"]) for v in report["variants"]] == [("good", 4, 0), ("bad", 0, 4)]
    assert (out / "sweep.md").is_file()


def loaded_run(protocol, name: str, values: list[float]) -> dict:
    """A finished run as `compare.load_run` gives it: one scored row per value, every metric equal to it."""
    from bench_lib.report import build_report

    rows = [{"id": f"s{i}", "category": "c", "status": "ok", "score": v, "flags": [], "judge_parse": "ok",
             "subscores": None, "metrics": {m.name: v for m in protocol.metrics}} for i, v in enumerate(values)]
    report = build_report(rows, timings={}, meta={"editor_model": name}, protocol=protocol)
    report["stamp"] = {"attempt": 1, "results_sha256": name}
    return {"folder": Path(name), "fingerprint": {}, "rows": rows, "meta": report["meta"],
            "protocol": report["protocol"], "report": report}


@pytest.mark.parametrize("name", ["default", "kris", "re_edit", "risebench", "viescore"])
def test_the_sweep_headline_is_the_protocols_primary_metric(name):
    """sweep.json's `primary` and sweep.md's first columns are the protocol's primary metric (not its first), and
    the chart draws every metric on its shown range with room for the whiskers."""
    from bench_lib.config import JudgeConfig
    from bench_lib.judges.rubrics import Rubrics
    from bench_lib.protocols import make_protocol
    from bench_lib.sweep import Variant, chart_metrics, render_sweep, summarise, sweep_figure

    cfg = JudgeConfig(protocol=name)
    protocol = make_protocol(cfg, Rubrics(cfg.prompts_dir))
    primary = protocol.primary
    low, high = primary.low, primary.high
    runs = [loaded_run(protocol, "base", [low, high, low, high]), loaded_run(protocol, "checkpoint-100", [high] * 4)]
    report = summarise([Variant("base", {}, None), Variant("checkpoint-100", {"lora": "x"}, None)], runs)
    assert report["primary"] == primary.name == {"default": "score", "kris": "score", "re_edit": "yes_rate",
                                                 "risebench": "score", "viescore": "overall"}[name]
    assert report["best"][primary.name]["variant"] == "checkpoint-100"
    md = render_sweep(report, chart=None)
    assert f"| variant | step | {primary.name} | Δ {primary.name} vs base | p |" in md
    shown_high = primary.shown(high)
    top = f"{shown_high:.2f}"
    assert f"| checkpoint-100 | 100 | {top} [{top}, {top}] |" in md  # the primary's mean, on its shown scale
    metrics = chart_metrics(report)
    for axes, metric in zip(sweep_figure(report, metrics).axes, metrics):
        shown_low, shown_high = metric.shown_range
        bottom, top = axes.get_ylim()
        assert bottom < shown_low and top > shown_high  # the whole range, and a margin: no whisker fills the panel
        assert axes.get_title(loc="left").startswith(f"{metric.name} ({shown_low:g}-{shown_high:g}")


def test_the_best_variant_of_a_lower_is_better_metric_has_the_lowest_mean():
    from bench_lib.metrics import Metric
    from bench_lib.protocols.base import PROTOCOLS, Protocol, register_protocol
    from bench_lib.sweep import Variant, summarise

    @register_protocol("test-errors")
    class Errors(Protocol):
        metrics = (Metric("errors", 0, 10, higher_is_better=False, primary=True), Metric("quality", 0, 10))

        def asks(self, sample, images):
            return []

        def sample_metrics(self, sample, answers):
            return {}

    try:
        protocol = Errors(JudgeConfigStub())
        runs = [loaded_run(protocol, "a", [5.0] * 6), loaded_run(protocol, "b", [1.0] * 6),
                loaded_run(protocol, "c", [3.0] * 6)]
        report = summarise([Variant(n, {}, None) for n in "abc"], runs)
    finally:
        PROTOCOLS.pop("test-errors")
    best = report["best"]["errors"]
    assert (best["variant"], best["runner_up"], best["mean"]) == ("b", "c", 1.0)
    # b - c = -2 on all 6 pairs: an interval below 0 and p = 2/64 (exact), significant on the better side
    assert best["vs_runner_up"]["difference"] == -2.0 and best["significant"] is True
    assert report["best"]["quality"]["variant"] == "a"


class JudgeConfigStub:
    category_map: dict = {}


def test_variants_that_would_log_at_one_tracker_step_are_refused_with_trackers(tmp_path):
    """A name without a checkpoint-N step logs at 0: with trackers, two such variants (base and step-30) went into
    one step, where W&B merged them into one row (the last variant's score under eval/score, the first's other
    keys kept beside it) and TensorBoard held two points under one name."""
    for name in ("step-30", "step-200"):
        adapter_folder(tmp_path / "a" / name)
    args = ["--sweep", str(tmp_path / "a"), "--output_dir", str(tmp_path / "o")]
    assert [v.name for v in expand(parse_config(args))] == ["base", "step-30", "step-200"]  # no trackers: fine
    with pytest.raises(ConfigError, match=r"sweep variants base, step-30, step-200 would log at the same tracker "
                                          r"step 0 .*name the variants checkpoint-N"):
        expand(parse_config([*args, "--log_with", "tensorboard"]))
    for name in ("checkpoint-30", "checkpoint-200"):
        adapter_folder(tmp_path / "c" / name)
    tracked = ["--sweep", str(tmp_path / "c"), "--output_dir", str(tmp_path / "o"), "--log_with", "tensorboard"]
    assert [v.step for v in expand(parse_config(tracked))] == [None, 30, 200]  # base alone at 0
    adapter_folder(tmp_path / "c" / "checkpoint-0")
    with pytest.raises(ConfigError, match=r"sweep variants base, checkpoint-0 would log at the same tracker step 0"):
        expand(parse_config(tracked))
