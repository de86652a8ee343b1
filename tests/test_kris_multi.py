"""KRIS-Bench's several-source tasks (multi-element composition, temporal prediction) through the whole pipeline,
and its summary by knowledge type (Factual / Conceptual / Procedural). Look-alike KRIS folders written here; the
editor and the judge are test doubles registered through the registries (they see what the pipeline hands them);
one test edits with the tiny real-class Qwen-Image-Edit-Plus pipeline."""

import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import EDITORS, JUDGES, Editor, EditResult, Judge, register_editor, register_judge
from bench_lib.config import DataConfig
from bench_lib.data import load_samples
from bench_lib.judging import Completion, ImagePart, Reading, ScaleReader, TextPart
from bench_lib.protocols.kris import QUESTIONS
from bench_lib.store import read_run

SIZE = (24, 16)


def colour(k: int) -> tuple[int, int, int]:
    return (10 + 20 * k, 90, 200 - 10 * k)


# task -> {key: (sources (file name, colour index), instruction, explanation)}
TASKS = {
    "count_change": {"1": ([("1.png", 0)], "add one cup", "")},
    "chemistry": {"1": ([("1.png", 1)], "pour the acid", "it fizzes")},
    "abstract_reasoning": {"1": ([("1.png", 2)], "finish the pattern", "the next shape")},
    "multi-element_composition": {"1": ([("1-1.png", 3), ("1-2.png", 4), ("1-3.png", 5)], "put them together", "")},
    "temporal_prediction": {"1": ([("1-1.png", 6), ("1-2.png", 7), ("1-4.png", 8)], "show the missing frame", "")},
}
SEVERAL = ("multi-element_composition_1", "temporal_prediction_1")


def kris_folder(root: Path) -> Path:
    for task, entries in TASKS.items():
        (root / task).mkdir(parents=True)
        annotation = {}
        for key, (sources, instruction, explanation) in entries.items():
            for name, k in sources:
                Image.new("RGB", SIZE, colour(k)).save(root / task / name)
            names = [name for name, _ in sources]
            annotation[key] = {"ori_img": names if len(names) > 1 else names[0], "gt_img": "", "ins_en": instruction,
                               "explain_en": explanation}
        (root / task / "annotation.json").write_text(json.dumps(annotation))
    return root


def edit_colour(index: int) -> tuple[int, int, int]:
    return (250, 5 * index, 7)


class ComposingEditor(Editor):
    """A test double that takes up to four sources: records the colours it was handed, in order, and returns an
    image whose colour names the sample (so the judge double can tell the samples' edits apart)."""

    needs_model = False
    seen: dict = {}

    def max_source_images(self) -> int:
        return 4

    def edit(self, sample, source, *, seed):
        images = source if isinstance(source, list) else [source]
        type(self).seen[sample.id] = [image.getpixel((0, 0)) for image in images]
        return EditResult(Image.new("RGB", (20, 20), edit_colour(sample.index)))


# what the judge answers per sample (told apart by the edit's colour) and question: consistency, quality,
# instruction, knowledge; 1-5
ANSWERS = {
    "count_change_1": {"consistency": 5, "quality": 4, "instruction": 3},
    "chemistry_1": {"consistency": 4, "quality": 4, "instruction": 4, "knowledge": 2},
    "abstract_reasoning_1": {"consistency": 1, "quality": 2, "instruction": 5, "knowledge": 5},
    "multi-element_composition_1": {"consistency": 2, "quality": 5, "instruction": 4},
    "temporal_prediction_1": {"consistency": 3, "quality": 3, "instruction": 1},
}


class ScriptedReader(Judge):
    """A logits-mode test double: answers each question with certainty on ANSWERS' value for the sample whose edit
    is among the request's images; records each request's view and the colours of its images, in order."""

    by_colour: dict = {}
    seen: list = []

    def read_scales(self, requests):
        images = [[p.image.getpixel((0, 0)) for p in r.content if isinstance(p, ImagePart)] for r in requests]
        type(self).seen += [(r.view, colours) for r, colours in zip(requests, images)]
        owners = [next(self.by_colour[c] for c in colours if c in self.by_colour) for colours in images]

        class Reader(ScaleReader):
            def read(self, prompt, rows):
                name = next(n for n, text in QUESTIONS.items() if prompt.text.startswith(text))
                out = []
                for owner in owners:
                    value = float(ANSWERS[owner][name])
                    out.append(Reading(value, [float(v == value) for v in prompt.scale.values], 1.0))
                return out

        return Reader()

    def generate(self, prompts):
        raise AssertionError("logits mode")


@pytest.fixture
def doubles():
    register_editor("test-composing")(ComposingEditor)
    register_judge("test-kris-reader")(ScriptedReader)
    ComposingEditor.seen, ScriptedReader.seen, ScriptedReader.by_colour = {}, [], {}
    yield
    EDITORS.pop("test-composing")
    JUDGES.pop("test-kris-reader")


def run_kris(tmp_path: Path, **more) -> dict:
    data = kris_folder(tmp_path / "KRIS_Bench")
    ids = [s.id for s in load_samples(DataConfig(dataset=str(data)))]
    # a sample's edit (the composing editor's) or its one source (the identity editor's edit) names it
    ScriptedReader.by_colour = {edit_colour(i): sample_id for i, sample_id in enumerate(ids)}
    ScriptedReader.by_colour.update({colour(entries[key][0][0][1]): f"{task}_{key}" for task, entries in TASKS.items()
                                     for key in entries if len(entries[key][0]) == 1})
    cfg = {"dataset": str(data), "output_dir": str(tmp_path / "out"), "editor": "test-composing",
           "judge": "test-kris-reader", "baselines": "", **more}
    runner.run(config_from_dict(cfg))
    return read_run(tmp_path / "out")


def test_several_sources_are_read_in_order_with_kris_frame_numbers(tmp_path):
    samples = {s.id: s for s in load_samples(DataConfig(dataset=str(kris_folder(tmp_path / "KRIS_Bench"))))}
    multi = samples["multi-element_composition_1"]
    assert multi.problem is None
    assert [ref.load().getpixel((0, 0)) for ref in multi.sources] == [colour(3), colour(4), colour(5)]
    assert multi.source_image.load().getpixel((0, 0)) == colour(3)  # the first, as before
    temporal = samples["temporal_prediction_1"]
    assert (temporal.fields["frames"], temporal.fields["target_frame"]) == ("1,2,4", "3")  # the frame 1-4 lacks
    assert len(samples["count_change_1"].sources) == 1 and samples["count_change_1"].source_images == ()


def test_a_list_where_one_image_is_expected_or_an_empty_list_is_the_samples_problem(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", SIZE, "red").save(folder / "a.png")
    rows = [{"id": "r", "category": "c", "instruction": "x", "source_image": "a.png",
             "reference_image": ["a.png", "a.png"]},
            {"id": "e", "category": "c", "instruction": "x", "source_image": []},
            {"id": "m", "category": "c", "instruction": "x", "source_image": ["a.png", "nope.png"]},
            {"id": "ok", "category": "c", "instruction": "x", "source_image": ["a.png"]}]
    (folder / "m.json").write_text(json.dumps(rows))
    samples = {s.id: s for s in load_samples(DataConfig(dataset=str(folder / "m.json")))}
    assert "a list of 2 images where one is expected" in samples["r"].problem
    assert "empty list of source images" in samples["e"].problem
    assert "source_image 2 of 2 file not found" in samples["m"].problem
    assert samples["ok"].problem is None and samples["ok"].source_images == ()  # a list of one: one source


def test_an_editor_that_takes_one_image_records_each_several_source_sample_as_failed(doubles, tmp_path):
    run = run_kris(tmp_path, editor="identity")
    rows = {r["id"]: r for r in run["rows"]}
    for sample_id in SEVERAL:
        assert rows[sample_id]["status"] == "edit_failed"
        assert re.search(r"has 3 source images and editor 'identity' takes 1: it needs an editor that takes several",
                         rows[sample_id]["error"])
    assert all(rows[i]["status"] == "ok" for i in rows if i not in SEVERAL)
    judged = {colours[-1] for _, colours in ScriptedReader.seen}
    assert colour(3) not in judged and colour(6) not in judged  # never judged from a first source alone


def test_several_sources_flow_through_edit_judge_log_gallery_and_export(doubles, tmp_path):
    run = run_kris(tmp_path)
    rows = {r["id"]: r for r in run["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    # the editor got every source, in the data's order
    assert ComposingEditor.seen["multi-element_composition_1"] == [colour(3), colour(4), colour(5)]
    assert ComposingEditor.seen["temporal_prediction_1"] == [colour(6), colour(7), colour(8)]
    assert ComposingEditor.seen["count_change_1"] == [colour(0)]

    # the judge: multi-element shows the sources in order, then the edit; temporal the frames in time order with
    # the edit at frame 3; quality the edit alone (metrics_multi_element.py, metrics_temporal_prediction.py)
    multi, temporal = edit_colour(3), edit_colour(4)
    views = {(view, colours[-1] if view == "quality" else tuple(colours)) for view, colours in ScriptedReader.seen}
    for view in ("consistency", "instruction"):
        assert (view, (colour(3), colour(4), colour(5), multi)) in views
        assert (view, (colour(6), colour(7), temporal, colour(8))) in views
    assert ("quality", multi) in views

    # judge_inputs.jsonl: every image of the view by digest and size, in that order
    log = [json.loads(line) for line in (tmp_path / "out" / "judge_inputs.jsonl").read_text().splitlines()]
    entry = next(e for e in log if e["id"] == "temporal_prediction_1" and e["view"] == "consistency")
    parts = entry["messages"][-1]["content"]
    assert "frame 3 is the generated one" in parts[0]["text"]  # the text first, naming the frame to predict
    labels = [p["text"] for p in parts if "text" in p][1:4]
    assert labels == ["Frame 1 (given):", "Frame 2 (given):", "Frame 3 (generated):"]

    def digest(image):
        return hashlib.sha256(f"RGB {image.width}x{image.height}\0".encode() + image.tobytes()).hexdigest()

    frames = [Image.new("RGB", SIZE, colour(k)) for k in (6, 7)] + [Image.new("RGB", (20, 20), temporal)] + \
        [Image.new("RGB", SIZE, colour(8))]
    assert [p["image_sha256"] for p in parts if "image_sha256" in p] == [digest(f) for f in frames]
    assert [p["size"] for p in parts if "size" in p] == [[24, 16], [24, 16], [20, 20], [24, 16]]

    # the edit record names every source it was made from
    edits = [json.loads(line) for path in sorted((tmp_path / "out" / "records").glob("*.edit.*"))
             for line in path.read_text().splitlines()]
    record = next(r for r in edits if r["id"] == "multi-element_composition_1")
    assert [s["image_sha256"] for s in record["source_images"]] == [
        digest(Image.new("RGB", SIZE, colour(k))) for k in (3, 4, 5)]

    # the gallery shows every source
    gallery = (tmp_path / "out" / "gallery.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', gallery, re.S).group(1))
    card = next(item for item in data["items"] if item["id"] == "multi-element_composition_1")
    assert card["source"] and len(card["more_sources"]) == 2 and all(card["more_sources"])
    assert '"source " + (k + 2) + " of " + count' in gallery

    # the exported dataset carries them too
    from bench_lib.export import export_run

    ds = export_run(tmp_path / "out", tmp_path / "export")
    by_id = {row["id"]: row for row in ds}
    assert [im.getpixel((0, 0)) for im in by_id["multi-element_composition_1"]["source_images"]] == [
        colour(3), colour(4), colour(5)]
    assert len(by_id["count_change_1"]["source_images"]) == 1


def test_the_knowledge_type_table_is_kris_benchs_summary(doubles, tmp_path):
    run = run_kris(tmp_path)
    table = run["report"]["knowledge_types"]

    # KRIS-Bench's summary (BAGEL eval/gen/kris/summarize.py) by hand: every dimension value on 0-100 as
    # 25 (v - 1); a group's AVG is the mean over all values of its samples (knowledge only in the knowledge
    # sub-types); knowledge stays 2 (instruction following is 4 > 2).
    def shown(sample_id):
        return [25 * (v - 1) for v in ANSWERS[sample_id].values()]

    factual = shown("count_change_1") + shown("temporal_prediction_1")
    conceptual = shown("chemistry_1")
    procedural = shown("abstract_reasoning_1") + shown("multi-element_composition_1")
    assert table["types"]["Factual"]["AVG"] == pytest.approx(sum(factual) / len(factual))
    assert table["types"]["Conceptual"]["AVG"] == pytest.approx(sum(conceptual) / len(conceptual))
    assert table["types"]["Procedural"]["AVG"] == pytest.approx(sum(procedural) / len(procedural))
    everything = factual + conceptual + procedural
    assert table["overall"]["AVG"] == pytest.approx(sum(everything) / len(everything))
    # not the mean of per-sample means (the two differ here: 4 values for a knowledge sample, 3 for others)
    assert table["types"]["Procedural"]["AVG"] != pytest.approx((sum(shown("abstract_reasoning_1")) / 4
                                                                 + sum(shown("multi-element_composition_1")) / 3) / 2)
    sub = table["subtypes"]
    assert sub["Instruction Decomposition"] == pytest.approx({"VC": 25, "VQ": 100, "IF": 75, "AVG": 200 / 3,
                                                              "count": 1})
    assert sub["Logical Reasoning"]["KP"] == 100 and "KP" not in sub["Temporal Prediction"]
    assert sub["Spatial Perception"]["AVG"] is None and sub["Spatial Perception"]["count"] == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    line = next(x for x in markdown.splitlines() if x.startswith("| **Procedural Knowledge**"))
    assert f"{sum(procedural) / len(procedural):.2f}" in line
    assert "| Instruction Decomposition | 25.00 | 100.00 | 75.00 | – | 66.67 | 1 |" in markdown


class VerbatimWriter(Judge):
    """A generate-mode test double: every answer gives all four of KRIS's keys; records each prompt's texts."""

    seen: list = []

    def generate(self, prompts):
        type(self).seen += [[p.text for p in prompt.content if isinstance(p, TextPart)] for prompt in prompts]
        answer = {"consistency_score": 3, "instruction_score": 3, "quality_score": 3, "knowledge_score": 3}
        return [Completion(json.dumps(answer)) for _ in prompts]

    def read_scales(self, requests):
        raise AssertionError("generate mode")


def test_the_benchmarks_own_several_source_prompts_are_filled_in_and_sent_first(doubles, tmp_path):
    register_judge("test-kris-writer")(VerbatimWriter)
    VerbatimWriter.seen = []
    folder = tmp_path / "Kris_Bench" / "ReasonEdit"
    folder.mkdir(parents=True)
    names = ("prompt_consist", "prompt_quality", "prompt_instruction_following", "prompt_view_instruction_following",
             "prompt_dual_evaluation", "prompt_consist_multi", "prompt_instruction_multi", "prompt_consist_temporal",
             "prompt_instruction_temporal")
    text = "".join(f'{name} = "MARK-{name} [{{instruct}}]' + (' frame {N}' if "temporal" in name else "") + '"\n'
                   for name in names)
    (folder / "prompts.py").write_text(text)
    try:
        run = run_kris(tmp_path, judge="test-kris-writer", judge_mode="generate",
                       judge_prompts=str(tmp_path / "Kris_Bench"),
                       judge_prompts_sha256=hashlib.sha256((folder / "prompts.py").read_bytes()).hexdigest(),
                       failure_policy="reference")
    finally:
        JUDGES.pop("test-kris-writer")
    assert all(r["status"] == "ok" for r in run["rows"])
    log = [json.loads(line) for line in (tmp_path / "out" / "judge_inputs.jsonl").read_text().splitlines()]

    def sent(sample_id, view):
        entry = next(e for e in log if e["id"] == sample_id and e["view"] == view)
        return entry["messages"][-1]["content"]

    parts = sent("temporal_prediction_1", "consistency")
    assert parts[0] == {"text": "MARK-prompt_consist_temporal [show the missing frame] frame 3"}
    assert len(parts) == 5 and all("image_sha256" in p for p in parts[1:])  # no labels: as every verbatim view
    parts = sent("multi-element_composition_1", "instruction")
    assert parts[0] == {"text": "MARK-prompt_instruction_multi [put them together]"}
    assert [p["size"] for p in parts[1:]] == [[24, 16]] * 3 + [[20, 20]]  # full size: the sources, then the edit
    assert sent("multi-element_composition_1", "quality")[0]["text"] == "MARK-prompt_quality [put them together]"


def test_the_tiny_qwen_image_edit_plus_pipeline_edits_from_every_source():
    from types import SimpleNamespace

    import torch

    from bench_lib.editors.diffusers_pipeline import DiffusersConfig, DiffusersEditor

    cfg = DiffusersConfig(editor_model="tiny:qwen-image-edit-plus", editor_dtype="float32",
                          editor_kwargs={"num_inference_steps": 1, "height": 32, "width": 32})
    editor = DiffusersEditor(cfg, device=torch.device("cpu"))
    seen = []  # what the text encoder is shown: one image grid per source (an observer, the pipeline is real)
    editor.pipe.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("image_grid_thw")), with_kwargs=True)
    try:
        assert editor.max_source_images() > 3
        sample = SimpleNamespace(id="s", instruction="put them together")
        sources = [Image.new("RGB", (40, 32), "blue"), Image.new("RGB", (32, 40), "yellow")]
        with torch.inference_mode():
            out = editor.edit(sample, sources, seed=3).image
        assert out.size == (32, 32)
        assert seen and all(grid is not None and grid.shape[0] == 2 for grid in seen)  # both sources, one call
    finally:
        editor.close()
