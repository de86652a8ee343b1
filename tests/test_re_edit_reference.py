"""RE-Edit's own data and failure rules under `failure_policy: reference`: its loader reads, for each of its five
categories, only the records whose `subset` is exactly that name (in an object of lists: the list under that very
key), and a missing edit is scored on the source image (iterative_pipeline_v7.py `_load_primary_images_from_dir`).
Under `strict` neither happens: every record is scored under its own subset, a missing edit is edit_failed.
RE-Edit's numbers are worked out here by hand; the data is RE-Edit's JSON layout, with invented text."""

import base64
import hashlib
import io
import json

import pytest
from PIL import Image
from test_reference_benchmarks import DIMENSION, RE_EDIT_YAML, writer, yes_no  # noqa: F401  (writer: a fixture)

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.config import DataConfig
from bench_lib.data import load_samples
from bench_lib.results import LEFT_OUT, ON_SOURCE
from bench_lib.store import read_run

NAMES = ("physical", "environmental", "cultural", "causal", "referential")


def png_b64(rgb) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 20), rgb).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def record(pair: str, subset, instruction: str, rgb) -> dict:
    out = {"src_img_b64": png_b64(rgb), "edit_instruction_en": instruction, "original_description_en": f"scene {pair}",
           "rationale_short_en": f"why {pair}", "original_image_path": f"images/{pair}.png"}
    return {**out, "subset": subset} if subset is not None else out


def test_records_re_edits_loader_would_not_read_carry_why(tmp_path):
    listed = [record("a", "physical", "x", "red"), record("b", "Physical", "x", "red"), record("c", None, "x", "red")]
    (tmp_path / "list.json").write_text(json.dumps(listed))
    samples = {s.id: s for s in load_samples(DataConfig(dataset=str(tmp_path / "list.json")))}
    assert samples["a"].fields["left_out_by_reference"] is None
    assert "compared exactly; this record's is 'Physical'" in samples["b"].fields["left_out_by_reference"]
    assert "this record's is ''" in samples["c"].fields["left_out_by_reference"]
    keyed = {"causal": [record("d", "causal", "x", "red"), record("e", "physical", "x", "red"),
                        record("f", None, "x", "red")],
             "Causal": [record("g", "Causal", "x", "red")]}
    (tmp_path / "keyed.json").write_text(json.dumps(keyed))
    samples = {s.id: s for s in load_samples(DataConfig(dataset=str(tmp_path / "keyed.json")))}
    assert samples["d"].fields["left_out_by_reference"] is None
    assert "under 'causal' with subset 'physical'" in samples["e"].fields["left_out_by_reference"]
    assert samples["f"].category == "causal" and "with subset ''" in samples["f"].fields["left_out_by_reference"]
    assert "reads only the lists under the keys physical" in samples["g"].fields["left_out_by_reference"]


def test_re_edit_reference_scores_a_missing_edit_on_the_source_and_leaves_out_what_its_loader_skips(writer,  # noqa: F811
                                                                                                    tmp_path):
    prompts = tmp_path / "repo" / "single_scoring_part_vllm" / "scoring_config.yaml"
    prompts.parent.mkdir(parents=True)
    prompts.write_text(RE_EDIT_YAML.format(dimensions="".join(DIMENSION.format(name=n) for n in NAMES)))
    source = {"p0": (200, 0, 0), "p1": (190, 0, 0), "x0": (180, 0, 0), "c0": (0, 200, 0), "c1": (0, 190, 0),
              "q0": (0, 0, 200)}
    data = {"physical": [record("p0", "physical", "melt 0", source["p0"]),
                         record("p1", "physical", "melt 1", source["p1"]),
                         record("x0", "causal", "drop 9", source["x0"])],  # filed under another key: skipped
            "causal": [record("c0", "causal", "drop 0", source["c0"]),
                       record("c1", "causal", "drop 1", source["c1"])],  # its edit is missing: scored on the source
            "Physical": [record("q0", "Physical", "melt 7", source["q0"])]}  # not one of the five: skipped
    (tmp_path / "bench.json").write_text(json.dumps(data))
    edits = tmp_path / "edits"
    edits.mkdir()
    for pair in ("p0", "p1", "x0", "c0", "q0"):
        Image.new("RGB", (32, 20), (90, 90, 90)).save(edits / f"{pair}.png")
    yes = {"melt 0": "yes", "melt 1": "no", "drop 9": "yes", "drop 0": "no", "drop 1": "yes", "melt 7": "yes"}
    follow = {"melt 0": 8, "melt 1": 6, "drop 9": 1, "drop 0": 4, "drop 1": 9, "melt 7": 0}
    sc = {"melt 0": [7, 9], "melt 1": [4, 2], "drop 9": [0, 0], "drop 0": [6, 8], "drop 1": [10, 3], "melt 7": [1, 1]}
    categories = {"melt 0": "physical", "melt 1": "physical", "drop 9": "causal", "drop 0": "causal",
                  "drop 1": "causal", "melt 7": "Physical"}
    for ins in yes:
        writer.script[(ins, f"DIM-{categories[ins] if categories[ins] in NAMES else 'physical'}")] = yes_no(yes[ins])
        writer.script[(ins, "IF")] = json.dumps({"score": follow[ins], "reasoning": "r"})
        writer.script[(ins, "SC")] = json.dumps({"score": sc[ins], "reasoning": "r"})
    out = tmp_path / "out"
    cfg = {"dataset": str(tmp_path / "bench.json"), "dataset_format": "re_edit", "output_dir": str(out),
           "editor": "precomputed", "edits_dir": str(edits), "baselines": "", "judge": "test-writer",
           "protocol": "re_edit", "judge_mode": "generate", "judge_prompts": str(prompts.parents[1]),
           "judge_prompts_sha256": hashlib.sha256(prompts.read_bytes()).hexdigest(), "failure_policy": "reference"}
    runner.run(config_from_dict(cfg))
    run = read_run(out)
    rows = {r["id"]: r for r in run["rows"]}
    report = run["report"]

    # RE-Edit by hand: it reads p0, p1 (physical) and c0, c1 (causal); c1's edit is missing, so c1 is judged on
    # its source image. Yes-rate per category in %, IF and SC (= min of the pair) pooled over the four.
    read = {"physical": ["melt 0", "melt 1"], "causal": ["drop 0", "drop 1"]}
    for category, instructions in read.items():
        assert report["categories"][category]["metrics"]["yes_rate"]["mean"] == pytest.approx(
            100 * sum(yes[i] == "yes" for i in instructions) / len(instructions))
    pooled = [i for instructions in read.values() for i in instructions]
    overall = report["overall"]["metrics"]
    assert overall["instruction_following"]["mean"] == pytest.approx(sum(follow[i] for i in pooled) / 4)
    assert overall["semantic_consistency"]["mean"] == pytest.approx(sum(min(sc[i]) for i in pooled) / 4)
    assert overall["yes_rate"]["count"] == 4

    assert rows["c1"]["status"] == "ok" and ON_SOURCE in rows["c1"]["flags"] and rows["c1"]["edited_image"] is None
    assert "scored on the source image" in rows["c1"]["error"] and "no edit for this sample" in rows["c1"]["error"]
    for pair in ("x0", "q0"):
        assert rows[pair]["status"] == "invalid_input" and LEFT_OUT in rows[pair]["flags"]
        assert rows[pair]["error"].startswith("left out under failure_policy reference: RE-Edit's loader")
    assert report["failure_counts"]["edits_scored_on_source"] == 1
    assert report["failure_counts"]["records_left_out"] == 2
    markdown = (out / "report.md").read_text()
    assert "missing edits scored on the source image (as the benchmark does) 1" in markdown
    assert "records left out (the benchmark's own loader does not read them) 2" in markdown
    assert "| Physical | Causal | IF | SC |" in markdown  # RE-Edit's row: no column for what it never read

    # the judge was shown c1's source as its edit: both images of each of its views are the source
    log = [json.loads(line) for line in (out / "judge_inputs.jsonl").read_text().splitlines()]
    image = Image.new("RGB", (32, 20), source["c1"])
    digest = hashlib.sha256(b"RGB 32x20\0" + image.tobytes()).hexdigest()
    views = [e for e in log if e["id"] == "c1"]
    assert len(views) == 3 and all([p.get("image_sha256") for p in e["messages"][-1]["content"]
                                    if "image_sha256" in p] == [digest, digest] for e in views)

    # strict (the same folder, reported again): every record under its own subset, the missing edit a failure
    writer.seen.clear()
    runner.run(config_from_dict({**cfg, "failure_policy": "strict"}))
    strict = {r["id"]: r for r in read_run(out)["rows"]}
    assert strict["c1"]["status"] == "edit_failed" and strict["c1"]["score"] is None
    assert strict["x0"]["status"] == "ok" and strict["x0"]["category"] == "causal"
    assert strict["q0"]["status"] == "ok" and strict["q0"]["category"] == "Physical"
    assert not any(ON_SOURCE in r["flags"] or LEFT_OUT in r["flags"] for r in strict.values())
    counts = read_run(out)["report"]["failure_counts"]
    assert counts["edits_scored_on_source"] == 0 and counts["records_left_out"] == 0
    assert not [seen for seen in writer.seen if any("drop 1" in str(p) for p in seen[1])]  # c1 not judged again
