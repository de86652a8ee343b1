"""Each protocol's rules: which images each question sees, the per-sample math against values computed by hand
from the benchmark's published rules, and the aggregation the report shows."""

import json
import math
from types import SimpleNamespace

import pytest
from conftest import RISEBENCH
from launch import TINY_ARGS, accelerate_launch
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.config import ConfigError, JudgeConfig
from bench_lib.judges.rubrics import Rubrics
from bench_lib.protocols import make_protocol, view_of
from bench_lib.protocols.base import Answer
from bench_lib.report import build_report, render_markdown, timing_summary
from bench_lib.store import read_run

SOURCE, EDITED, REFERENCE = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue"), \
    Image.new("RGB", (8, 8), "green")
IMAGES = {"source": SOURCE, "edited": EDITED, "reference": REFERENCE}


def protocol(name, **judge):
    cfg = JudgeConfig(protocol=name, **judge)
    return make_protocol(cfg, Rubrics(cfg.prompts_dir))


def sample(category, protocol_=None, *, reference_image=False, reference_text=None, **fields):
    s = SimpleNamespace(category=category, instruction="Do it.", reference_text=reference_text,
                        reference_image=object() if reference_image else None, fields=fields)
    return view_of(s, protocol_, {}) if protocol_ is not None else s


def shown(protocol_, view):
    """view name -> the images (by identity: source, edited, reference) each ask shows, in order."""
    names = {id(SOURCE): "source", id(EDITED): "edited", id(REFERENCE): "reference"}
    return {ask.view: [names[id(image)] for _, image in ask.images] for ask in protocol_.asks(view, IMAGES)}


def answers(protocol_, view, values: dict, dists: dict = None) -> dict:
    """Answers as generate mode gives them (one-hot), or with explicit distributions."""
    questions = protocol_.questions(view)
    out = {}
    for name, value in values.items():
        scale = questions[name].scale.values
        dist = (dists or {}).get(name) or [1.0 if v == value else 0.0 for v in scale]
        out[name] = Answer(sum(v * p for v, p in zip(scale, dist)), scale, tuple(dist))
    return out


# --- which images each question sees ---------------------------------------------------------------


def test_viescore_quality_sees_only_the_edited_image():
    p = protocol("viescore")
    assert shown(p, sample("background_change", p)) == {"semantics": ["source", "edited"], "quality": ["edited"]}
    big = Image.new("RGB", (16, 12), "blue")
    asks = p.asks(sample("x", p), {"source": SOURCE, "edited": big, "reference": None})
    assert [img.size for _, img in asks[0].images] == [(8, 8), (8, 8)]  # GEdit: the edit judged at the source's size


def test_risebench_images_per_category():
    p = protocol("risebench")
    assert shown(p, sample("temporal_reasoning", p, reference_text="old")) == {
        "reasoning": ["edited"], "consistency": ["source", "edited"], "plausibility": ["edited"]}
    assert shown(p, sample("causal_reasoning", p, reference_text="ash", reasoning_img="x")) ["reasoning"] == [
        "source", "edited"]
    assert shown(p, sample("spatial_reasoning", p, reference_image=True)) == {
        "reasoning": ["reference", "edited"], "consistency": ["reference", "edited"], "plausibility": ["edited"]}
    assert shown(p, sample("logical_reasoning", p, reference_text="7")) == {
        "reasoning": ["edited"], "consistency": ["source", "edited"]}  # no plausibility for logical
    assert shown(p, sample("logical_reasoning", p, reference_image=True)) == {
        "reasoning": ["reference", "edited"], "consistency": ["reference", "edited"]}
    assert "consistency" not in shown(p, sample("temporal_reasoning", p, consistency_free=True))


def test_kris_and_re_edit_images_and_texts():
    k = protocol("kris")
    assert shown(k, sample("count_change", k)) == {"consistency": ["source", "edited"], "quality": ["edited"],
                                                   "instruction": ["source", "edited"]}
    assert shown(k, sample("viewpoint_change", k, reference_image=True))["instruction"] == [
        "source", "edited", "reference"]
    knowledge = sample("chemistry", k, explanation="Acid and carbonate make CO2.")
    ask = next(a for a in k.asks(knowledge, IMAGES) if a.view == "knowledge")
    assert [q.name for q in ask.questions] == ["instruction", "knowledge"] and "CO2" in ask.context
    r = protocol("re_edit")
    view = sample("physical", r, description="An ice cube.", rationale="Ice melts.")
    assert shown(r, view) == {"reasoning": ["source", "edited"], "instruction_following": ["source", "edited"],
                              "semantic_consistency": ["source", "edited"]}
    reasoning = r.asks(view, IMAGES)[0].context
    assert "PHYSICAL" in reasoning and "An ice cube." in reasoning and "challenge: Ice melts." in reasoning
    assert "challenge" not in r.asks(sample("physical", r, rationale=""), IMAGES)[0].context  # only when given


# --- per-sample math, by hand from the published rules ----------------------------------------------------


def test_viescore_math():
    p = protocol("viescore")
    v = sample("x", p)
    m = p.sample_metrics(v, answers(p, v, {"editing_success": 8, "over_editing": 6, "naturalness": 7, "artifacts": 9}))
    assert m == {"semantics": 6, "quality": 7, "overall": pytest.approx(math.sqrt(42))}


def test_risebench_math():
    p = protocol("risebench")
    temporal = sample("temporal_reasoning", p)
    m = p.sample_metrics(temporal, answers(p, temporal, {"reasoning": 5, "consistency": 4, "plausibility": 3}))
    assert m["score"] == pytest.approx(0.3 * 4 + 0.5 * 5 + 0.2 * 3) and m["accuracy"] == 0.0
    m = p.sample_metrics(temporal, answers(p, temporal, {"reasoning": 1, "consistency": 5, "plausibility": 5}))
    assert m["score"] == pytest.approx(max(1.0, 0.5 * (0.3 * 5 + 0.5 * 1 + 0.2 * 5)))  # R = 1: halved
    m = p.sample_metrics(temporal, answers(p, temporal, {"reasoning": 5, "consistency": 5, "plausibility": 5}))
    assert m["score"] == pytest.approx(5.0) and m["accuracy"] == 1.0
    free = sample("causal_reasoning", p, consistency_free=True)
    m = p.sample_metrics(free, answers(p, free, {"reasoning": 4, "plausibility": 5}))
    assert m["score"] == pytest.approx(0.8 * 4 + 0.2 * 5) and m["consistency"] is None and m["accuracy"] == 0.0
    logical = sample("logical_reasoning", p, reference_text="7")
    m = p.sample_metrics(logical, answers(p, logical, {"reasoning": 1, "consistency": 0}))
    assert (m["reasoning"], m["consistency"]) == (5.0, 1.0) and m["plausibility"] is None  # 0/1 -> 1/5
    assert m["score"] == pytest.approx(0.3 * 1 + 0.7 * 5) and m["accuracy"] == 0.0
    # logits mode: R is 1 or 5 with equal odds; E[score] = .5 * score(R=1) + .5 * score(R=5), accuracy P(all 5)
    m = p.sample_metrics(temporal, answers(p, temporal, {"reasoning": 3, "consistency": 5, "plausibility": 5},
                                           {"reasoning": [0.5, 0, 0, 0, 0.5]}))
    assert m["score"] == pytest.approx(0.5 * max(1, 0.5 * 3.0) + 0.5 * 5.0) and m["accuracy"] == pytest.approx(0.5)


def test_kris_math_and_its_0_to_100_scale():
    p = protocol("kris")
    knowledge = sample("chemistry", p)
    m = p.sample_metrics(knowledge, answers(p, knowledge, {"consistency": 4, "quality": 5, "instruction": 2,
                                                           "knowledge": 5}))
    assert m["knowledge"] == 1.0  # instruction following <= 2: knowledge plausibility is 1
    assert m["score"] == pytest.approx((4 + 5 + 2 + 1) / 4)
    common = sample("color_change", p)
    m = p.sample_metrics(common, answers(p, common, {"consistency": 5, "quality": 3, "instruction": 4}))
    assert m["knowledge"] is None and m["score"] == pytest.approx(4.0)
    rows = [{"id": "a", "category": "chemistry", "status": "ok", "metrics": {"score": 3.0, "knowledge": 1.0}},
            {"id": "b", "category": "chemistry", "status": "ok", "metrics": {"score": 5.0, "knowledge": 5.0}}]
    aggregated = p.aggregate(rows)
    assert aggregated["score"]["mean"] == pytest.approx(25 * (4.0 - 1)) and aggregated["knowledge"]["count"] == 2


def test_re_edit_math_and_yes_rate():
    p = protocol("re_edit")
    v = sample("physical", p)
    m = p.sample_metrics(v, answers(p, v, {"yes": 1.0, "instruction_following": 7, "editing_success": 8,
                                           "over_editing": 5}))
    assert m == {"yes_rate": 1.0, "instruction_following": 7.0, "semantic_consistency": 5.0}
    rows = [{"id": str(i), "category": "physical", "status": "ok",
             "metrics": {"yes_rate": y, "instruction_following": 5.0, "semantic_consistency": 4.0}}
            for i, y in enumerate([1.0, 0.0, 1.0, 1.0])]
    assert p.aggregate(rows)["yes_rate"]["mean"] == pytest.approx(75.0)  # percent of yes answers


def test_default_math_is_the_score_formula():
    p = protocol("default", score_formula="viescore")
    v = sample("physics", p)
    assert p.sample_metrics(v, answers(p, v, {"instruction": 4, "consistency": 6, "quality": 9}))["score"] == 6.0


# --- categories ------------------------------------------------------------------------------------------


def test_a_wrong_category_map_is_one_line_before_torch_and_before_the_output_folder(tmp_path):
    from conftest import assert_one_line, probe

    out = tmp_path / "out"
    result, imported, errors = probe("--dataset", "data/demo/manifest.jsonl", "--editor", "identity", "--output_dir",
                                     str(out), "--protocol", "risebench", "--category_map", "physics=gravity")
    assert_one_line(result, errors, "`category_map` maps to ['gravity']", "'risebench'")
    assert imported == [] and not out.exists()


def test_category_map_is_case_insensitive_and_checked():
    p = make_protocol(JudgeConfig(protocol="risebench", category_map={"Aging": "TEMPORAL"}),
                      Rubrics(JudgeConfig().prompts_dir))
    assert p.dimension_of("aging", {"Aging": "TEMPORAL"}) == "temporal"
    assert p.dimension_of("Causal_Reasoning", {}) == "causal"  # RISEBench's own names, any case
    assert p.dimension_of("weather", {}) is None  # unmapped: the protocol's default, with one warning
    with pytest.raises(ConfigError, match="not dimensions of protocol 'risebench'"):
        make_protocol(JudgeConfig(protocol="risebench", category_map={"aging": "time"}),
                      Rubrics(JudgeConfig().prompts_dir))
    d = protocol("default")
    assert d.dimension_of("physical", {}) == "physics" and d.dimension_of("Physics", {}) == "physics"
    assert view_of(sample("cultural"), d, {}).dimension == "social"


# --- the report --------------------------------------------------------------------------------------------


def test_viescore_report_follows_gedit_averages():
    p = protocol("viescore")
    rows = []
    for i, (task, language, inter, o) in enumerate([("color_alter", "en", True, 4.0),
                                                    ("color_alter", "en", False, 6.0),
                                                    ("subject-add", "en", True, 9.0),
                                                    ("color_alter", "cn", True, 2.0)]):
        rows.append({"id": str(i), "category": task, "status": "ok", "score": o, "flags": [], "judge_parse": "ok",
                     "metrics": {"semantics": o, "quality": o, "overall": o},
                     "extras": {"language": language, "intersection": inter}})
    meta = {"dataset": "d", "num_samples": 4, "editor_model": "e", "judge_model": "j", "world_size": 1, "seed": 0,
            "judge_mode": "logits", "score_formula": "viescore", "score_formula_text": "x"}
    report = build_report(rows, timings=timing_summary([{"load_editor": 0, "edit": 1, "edited": 1, "switch": 0,
                                                          "judge": 1, "judged": 1}]), meta=meta, protocol=p)
    en = report["groups"]["en"]
    assert en["categories"]["color_alter"]["metrics"]["overall"]["mean"] == 5.0
    assert en["macro_metrics"]["overall"]["mean"] == pytest.approx((5.0 + 9.0) / 2)  # mean of the task types
    assert en["intersection_macro_metrics"]["overall"]["mean"] == pytest.approx((4.0 + 9.0) / 2)
    assert report["groups"]["cn"]["macro_metrics"]["overall"]["mean"] == 2.0
    assert report["protocol"]["name"] == "viescore" and len(report["protocol"]["prompts_sha256"]) == 64
    md = render_markdown(report, protocol=p)
    assert md.index("viescore: the benchmark's own table") < md.index("## Details")
    assert "Instruction language en:" in md and "| **Average** (mean of the task types) | 7.000" in md


@pytest.mark.skipif(not RISEBENCH.is_dir(), reason="../shared/data/risebench is not present in this clone")
def test_the_shared_risebench_samples_through_the_risebench_protocol(tmp_path):
    out = tmp_path / "rise"
    runner.run(config_from_dict({"dataset": str(RISEBENCH / "data_total.json"), "output_dir": str(out),
                                 "editor": "identity", "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32",
                                 "judge_min_digit_mass": 0.0, "protocol": "risebench", "limit": 32,
                                 "judge_batch_size": 16, "judge_max_pixels": 128 * 128}))
    run = read_run(out)
    dims = {r["category"]: r["dimension"] for r in run["rows"]}
    assert dims == {"temporal_reasoning": "temporal", "causal_reasoning": "causal", "spatial_reasoning": "spatial",
                    "logical_reasoning": "logical"}
    for row in run["rows"]:
        assert row["status"] == "ok" and row["score"] == row["metrics"]["score"]
        assert (row["answers"]["plausibility"] is not None) == (row["dimension"] != "logical")  # asked or null
    report = run["report"]
    assert set(report["overall"]["metrics"]) == {"score", "accuracy", "reasoning", "consistency", "plausibility"}
    assert report["categories"]["logical_reasoning"]["metrics"]["plausibility"]["count"] == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# Benchmark report") and "| Accuracy |" in md.split("## Details")[0]
    assert json.loads((out / "run.json").read_text())["fingerprint"]["protocol"]["name"] == "risebench"


def test_re_edit_files_through_the_re_edit_protocol_on_two_processes(tmp_path):
    """The acceptance run: the smoke recipe on RE-Edit's own file format, scored with RE-Edit's protocol."""
    out = tmp_path / "re-edit"
    accelerate_launch(2, ["--dataset", "data/demo/re_edit.json", "--dataset_format", "re_edit", "--protocol",
                          "re_edit", "--output_dir", str(out), "--limit", "5", *TINY_ARGS], timeout=300)
    assert sorted(json.loads(p.read_text())["rank"] for p in out.glob("worker-*.json")) == [0, 1]
    run = read_run(out)
    rows = run["rows"]
    assert [r["id"] for r in rows] == ["physics_01", "physics_02", "environment_01", "environment_02", "social_01"]
    assert [r["category"] for r in rows] == ["physical"] * 2 + ["environmental"] * 2 + ["cultural"]
    assert all(r["status"] == "ok" and set(r["answers"]) == {"yes", "instruction_following", "editing_success",
                                                              "over_editing"} for r in rows)
    assert all(0 <= r["metrics"]["yes_rate"] <= 1 and r["score"] == r["metrics"]["yes_rate"] for r in rows)
    headline = (out / "report.md").read_text().split("## Details")[0]
    assert "| Physical | Environmental | Cultural | IF | SC |" in headline
    assert run["report"]["meta"]["world_size"] == 2 and run["report"]["protocol"]["name"] == "re_edit"
