"""The public benchmarks' own files, read unchanged (`dataset_format`, detected by `auto`), and images given
as base64 text in any format."""

import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import RISEBENCH, copy_demo, identity_run
from PIL import Image

from bench_lib.config import ConfigError, DataConfig
from bench_lib.data import detect_format, load_benchmark, load_samples
from bench_lib.formats.re_edit import re_edit_id


def png_bytes(color, size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(color, size=(24, 16)) -> str:
    return base64.b64encode(png_bytes(color, size)).decode("ascii")


def re_edit_records():
    return [
        {"subset": "physical", "original_image_path": "images/00025_physical_medium.png", "src_img_b64": b64("red"),
         "edit_instruction_en": "Melt the ice.", "original_description_en": "An ice cube on a table.",
         "rationale_short_en": "Ice melts in the sun."},
        {"subset": "cultural", "original_image_path": "sub/dir/00031_cultural_hard.jpg",
         "src_img_b64": "data:image/png;base64," + b64("blue"), "edit_instruction_en": "Make it a wedding.",
         "original_description_en": "A hall.", "rationale_short_en": ""},
        {"subset": "causal", "original_image_path": "no_slash.png", "src_img_b64": b64("green"),
         "edit_instruction_en": "Drop the glass.", "original_description_en": "A glass."},
        {"subset": "referential", "src_img_b64": b64("white"), "edit_instruction_en": "Paint the left cup.",
         "original_description_en": "Cups."},
        {"subset": "environmental", "original_image_path": "images/big.png", "src_img_b64": b64("black", (400, 300)),
         "edit_instruction_en": "Make it night.", "original_description_en": "A street."},
    ]


def test_re_edit_ids_follow_its_loader():
    assert (re_edit_id({"original_image_path": "images/00025_physical_medium.png"}, "physical", 0)
            == "00025_physical_medium")
    assert re_edit_id({"original_image_path": "a/b.jpg.png"}, "x", 0) == "b"  # every ".png", then every ".jpg"
    assert re_edit_id({"original_image_path": "a/b.jpeg"}, "x", 0) == "b.jpeg"  # only .png and .jpg are removed
    assert re_edit_id({"original_image_path": "c.png"}, "x", 0) == "c.png"  # no "/": the value as it is
    assert re_edit_id({}, "causal", 7) == "causal_7"


@pytest.mark.parametrize("shape", ["list", "by_category"])
def test_re_edit_file_read_unchanged(tmp_path, shape):
    records = re_edit_records()
    data = records if shape == "list" else {r["subset"]: [r] for r in records}
    path = tmp_path / "RE-Edit.json"
    path.write_text(json.dumps(data))
    cfg = DataConfig(dataset=str(path), max_image_pixels=100_000)
    assert detect_format(cfg).name == "re_edit"
    samples, identity = load_benchmark(cfg)
    assert identity.startswith("sha256:")
    by_id = {s.id: s for s in samples}
    missing_path_id = "referential_3" if shape == "list" else "referential_0"
    assert list(by_id) == ["00025_physical_medium", "00031_cultural_hard", "no_slash.png", missing_path_id, "big"]
    first = by_id["00025_physical_medium"]
    assert first.category == "physical" and first.instruction == "Melt the ice."
    assert first.fields == {"description": "An ice cube on a table.", "rationale": "Ice melts in the sun."}
    assert first.source_image.load().getpixel((0, 0)) == (255, 0, 0)  # raw base64
    assert by_id["00031_cultural_hard"].source_image.load().getpixel((0, 0)) == (0, 0, 255)  # a data URI
    assert "rationale" not in by_id["00031_cultural_hard"].fields  # empty: no challenge to show
    with pytest.raises(ValueError, match="over max_image_pixels"):  # the pixel cap holds for base64 too
        by_id["big"].source_image.load()


def test_risebench_file_read_unchanged(tmp_path):
    (tmp_path / "causal_reasoning_images").mkdir()
    Image.new("RGB", (20, 20), "red").save(tmp_path / "causal_reasoning_images" / "1.png")
    Image.new("RGB", (20, 20), "blue").save(tmp_path / "causal_reasoning_images" / "1_ref.png")
    rows = [{"index": "causal_reasoning_1", "category": "causal_reasoning", "instruction": "Burn it.",
             "image": "causal_reasoning_images/1.png", "reference": "Ashes.", "subtask": "State Transition",
             "consistency_free": None},
            {"index": "logical_reasoning_2", "category": "logical_reasoning", "instruction": "Solve it.",
             "image": "causal_reasoning_images/1.png", "reference_img": "causal_reasoning_images/1_ref.png",
             "reasoning_wo_ins": True}]
    (tmp_path / "data_total.json").write_text(json.dumps(rows))
    cfg = DataConfig(dataset=str(tmp_path / "data_total.json"))
    assert detect_format(cfg).name == "risebench"
    first, second = load_samples(cfg)
    assert (first.id, first.reference_text, first.reference_image) == ("causal_reasoning_1", "Ashes.", None)
    assert first.fields == {"subtask": "State Transition", "consistency_free": None, "reasoning_wo_ins": None}
    assert second.reference_image.load().getpixel((0, 0)) == (0, 0, 255) and second.fields["reasoning_wo_ins"] is True


@pytest.mark.skipif(not RISEBENCH.is_dir(), reason="../shared/data/risebench is not present in this clone")
def test_the_shared_risebench_samples_need_no_mapping():
    cfg = DataConfig(dataset=str(RISEBENCH / "data_total.json"))
    assert detect_format(cfg).name == "risebench"
    samples = load_samples(cfg)
    source = json.loads((RISEBENCH / "data_total.json").read_text())
    assert [s.id for s in samples] == [r["index"] for r in source] and not any(s.problem for s in samples)
    assert sum(s.reference_image is not None for s in samples) == sum("reference_img" in r for r in source)


def make_kris(tmp_path):
    root = tmp_path / "KRIS_Bench"
    for task, entries in {
        "chemistry": {"1": {"ori_img": "1.jpg", "gt_img": "", "ins_en": "Add acid.", "explain_en": "It fizzes."},
                      "2": {"ori_img": "2.jpg", "gt_img": "", "ins_en": "Heat it.", "explain_en": ""}},
        "viewpoint_change": {"1": {"ori_img": "1.jpg", "gt_img": "1_gt.jpg", "ins_en": "Show it from above.",
                                   "explain_en": ""}},
        "temporal_prediction": {"1": {"ori_img": ["1-1.jpg", "1-2.jpg", "1-3.jpg"], "gt_img": "1-4.jpg",
                                      "ins_en": "Show frame 4.", "explain_en": ""}},
    }.items():
        (root / task).mkdir(parents=True)
        (root / task / "annotation.json").write_text(json.dumps(entries))
        for entry in entries.values():
            for name in (([entry["ori_img"]] if isinstance(entry["ori_img"], str) else entry["ori_img"])
                         + [entry["gt_img"]]):
                if name:
                    Image.new("RGB", (16, 16), "green").save(root / task / name)
    return root


def test_kris_folders_read_unchanged(tmp_path):
    cfg = DataConfig(dataset=str(make_kris(tmp_path)))
    assert detect_format(cfg).name == "kris"
    samples = {s.id: s for s in load_samples(cfg)}
    assert list(samples) == ["chemistry_1", "chemistry_2", "temporal_prediction_1", "viewpoint_change_1"]
    assert samples["chemistry_1"].fields["explanation"] == "It fizzes." and "explanation" not in samples[
        "chemistry_2"].fields
    assert samples["chemistry_1"].category == "chemistry" and samples["chemistry_1"].problem is None
    assert samples["viewpoint_change_1"].reference_image.load().size == (16, 16)
    temporal = samples["temporal_prediction_1"]  # several sources: all of them, in order (tests/test_kris_multi.py)
    assert temporal.problem is None and len(temporal.sources) == 3 and temporal.fields["target_frame"] == "4"


def gedit_rows(tmp_path):
    return [{"key": f"k{i}", "task_type": task, "instruction": f"edit {i}", "instruction_language": lang,
             "input_image": {"bytes": png_bytes("red"), "path": None}, "Intersection_exist": i % 2 == 0}
            for i, (task, lang) in enumerate([("color_alter", "en"), ("color_alter", "cn"), ("subject-add", "en")])]


def make_gedit(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(gedit_rows(tmp_path)).cast_column("input_image", datasets.Image())
    ds.to_parquet(str(tmp_path / "gedit.parquet"))
    return tmp_path / "gedit.parquet"


def test_gedit_parquet_read_unchanged(tmp_path):
    cfg = DataConfig(dataset=str(make_gedit(tmp_path)))
    samples = load_samples(cfg)  # a single parquet file; gedit recognised by its columns
    assert [(s.id, s.category) for s in samples] == [("k0", "color_alter"), ("k1", "color_alter"),
                                                     ("k2", "subject-add")]
    assert samples[1].fields == {"language": "cn", "intersection": False}
    assert samples[0].source_image.load().getpixel((0, 0)) == (255, 0, 0)


def test_base64_and_paths_in_generic_files(tmp_path):
    import datasets

    Image.new("RGB", (16, 16), "white").save(tmp_path / "a.png")
    rows = [{"id": "path", "category": "c", "instruction": "x", "source_image": "a.png"},
            {"id": "raw", "category": "c", "instruction": "x", "source_image": b64("red")},
            {"id": "uri", "category": "c", "instruction": "x", "source_image": "data:image/png;base64," + b64("blue")},
            {"id": "outside", "category": "c", "instruction": "x", "source_image": "../a.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    datasets.Dataset.from_list(rows).to_csv(str(tmp_path / "m.csv"))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "m.parquet"))
    for name in ("m.jsonl", "m.csv", "m.parquet"):
        samples = load_samples(DataConfig(dataset=str(tmp_path / name)))
        pixels = [s.source_image.load().getpixel((0, 0)) if not s.problem else None for s in samples]
        assert pixels == [(255, 255, 255), (255, 0, 0), (0, 0, 255), None], name
        assert "leaves the dataset's folder" in samples[3].problem


def test_a_named_format_on_the_wrong_files_is_one_clear_error(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ConfigError, match="format kris needs"):
        load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), dataset_format="kris"))
    (tmp_path / "x.json").write_text('"just a string"')
    with pytest.raises(ConfigError, match="not RE-Edit's format"):
        load_samples(DataConfig(dataset=str(tmp_path / "x.json"), dataset_format="re_edit"))
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("recipe", ["re_edit", "risebench", "kris", "gedit"])
def test_the_benchmark_recipes_run_on_their_formats(tmp_path, recipe):
    """Each benchmark's recipe as shipped (format, protocol, judge settings), with the tiny judge and the identity
    editor in place of the real models, on a small file of that benchmark's format."""
    import bench_lib.runner as runner
    from bench_lib import parse_config
    from bench_lib.store import read_run

    if recipe == "risebench" and not RISEBENCH.is_dir():
        pytest.skip("../shared/data/risebench is not present in this clone")
    data = {"re_edit": lambda: "data/demo/re_edit.json", "risebench": lambda: RISEBENCH / "data_total.json",
            "kris": lambda: make_kris(tmp_path), "gedit": lambda: make_gedit(tmp_path)}[recipe]()
    cfg = parse_config(["--config", f"configs/{recipe}.yaml", "--dataset", str(data), "--output_dir",
                        str(tmp_path / "out"), "--editor", "identity", "--judge_model", "tiny:qwen3-vl",
                        "--judge_dtype", "float32", "--judge_min_digit_mass", "0", "--judge_mode", "logits",
                        "--limit", "4", "--baselines", "", "--judge_prompts", "", "--judge_prompts_sha256", ""])
    # (offline: this project's wording; the recipes' prompt files are tested in tests/test_reference_benchmarks.py)
    assert cfg.judge.protocol == {"gedit": "viescore"}.get(recipe, recipe)
    runner.run(cfg)
    run = read_run(tmp_path / "out")
    assert run["report"]["protocol"]["name"] == cfg.judge.protocol
    assert [r["status"] for r in run["rows"]].count("ok") == len([r for r in run["rows"] if not r["error"]]) > 0
    assert "the benchmark's own table" in (tmp_path / "out" / "report.md").read_text()


def noise_b64(side=640) -> str:
    """A PNG of noise (it does not compress): over 1 MiB as base64, the size of a real RE-Edit record's image."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.parametrize("shape", ["list", "by_category", "jsonl"])
def test_a_re_edit_file_whose_first_record_is_larger_than_a_mebibyte_is_detected(tmp_path, shape, monkeypatch):
    import builtins

    import bench_lib.formats.jsonstream as jsonstream

    records = re_edit_records()
    # the image first, then a key and a value with escapes, then the fields detection needs
    records[0] = {"src_img_b64": noise_b64(), "note \"q\" \\": "a\\\"b",
                  **{k: v for k, v in records[0].items() if k != "src_img_b64"}}
    assert len(records[0]["src_img_b64"]) > 1 << 20
    path = tmp_path / ("RE-Edit.jsonl" if shape == "jsonl" else "RE-Edit.json")
    first_size = len(json.dumps(records[0]))
    if shape == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records if shape == "list" else {"physical": [], "all": records}))
    read = []

    def counting_open(*args, **kwargs):
        f = builtins.open(*args, **kwargs)
        original = f.read
        f.read = lambda n=-1: (data := original(n), read.append(len(data)))[0]
        return f

    monkeypatch.setattr(jsonstream, "open", counting_open, raising=False)
    assert detect_format(DataConfig(dataset=str(path))).name == "re_edit"
    assert sum(read) < first_size + (2 << 20) and -1 not in read  # streamed: never the whole file at once
    monkeypatch.undo()
    samples = load_samples(DataConfig(dataset=str(path), max_image_pixels=1_000_000))
    assert samples[0].id == "00025_physical_medium" and samples[0].source_image.size() == (640, 640)


def test_detection_reads_only_up_to_the_first_record(tmp_path):
    from bench_lib.formats.jsonstream import first_record_keys

    record = {"subset": "physical", "src_img_b64": noise_b64(), "edit_instruction_en": "Melt it."}
    path = tmp_path / "big.json"
    path.write_text("[" + json.dumps(record) + ", " + "x" * (3 << 20))  # what follows is never parsed
    assert first_record_keys(path) == set(record)
    for text, keys in [("[]", None), ("[1, 2]", None), ('{"a": 1}', None), ('{"a": [], "b": [{"k": 1}]}', {"k"}),
                       ('{"n": {"y": [1, "]}"]}, "m": -1.5e3, "b": [{"k": true}]}', {"k"}),
                       ('[{"k": "unterminated', None), ("not json", None), ('\ufeff[{"k\\u00e9": null}]', {"ké"})]:
        path.write_text(text, encoding="utf-8")
        assert first_record_keys(path) == keys, text
    # every cut of the text between two chunks: escapes, multi-byte characters and numbers split anywhere
    from bench_lib.formats.jsonstream import _JsonStream

    text = '{"a\\"b": "x\\\\", "é\\u00e9": [1, {"d": "\\"}"}], "n": -12.5e3, "e": null}'
    for chunk in (1, 2, 3, 5, 64):
        assert _JsonStream(io.BytesIO(text.encode()), chunk=chunk).keys() == {'a"b', "éé", "n", "e"}, chunk


def test_a_kris_key_written_with_other_digits_is_one_line_and_exit_2(tmp_path):
    from conftest import assert_one_line, probe

    root = make_kris(tmp_path)
    annotation = root / "chemistry" / "annotation.json"
    entries = json.loads(annotation.read_text())
    entries["²"] = entries["2"]  # str.isdigit() says yes, int() says no
    annotation.write_text(json.dumps(entries))
    result, imported, errors = probe("--dataset", str(root), "--editor", "identity", "--output_dir",
                                     str(tmp_path / "out"))
    assert_one_line(result, errors, str(annotation), "key '²'")
    assert imported == [] and not (tmp_path / "out").exists()
    del entries["²"]
    entries["a"] = entries["10"] = entries["2"]  # other text keys keep their order: numbers first, then text
    annotation.write_text(json.dumps(entries))
    assert [s.id for s in load_samples(DataConfig(dataset=str(root)))][:4] == ["chemistry_1", "chemistry_2",
                                                                              "chemistry_10", "chemistry_a"]


def test_a_fifo_named_annotation_json_is_refused_not_waited_on(tmp_path):
    import os

    from test_data import finishes

    root = make_kris(tmp_path)
    (root / "zz_task").mkdir()
    os.mkfifo(root / "zz_task" / "annotation.json")
    outcome = finishes(lambda: load_samples(DataConfig(dataset=str(root))),
                       unblock=[root / "zz_task" / "annotation.json"])
    assert isinstance(outcome.get("error"), ConfigError) and "not a regular file" in str(outcome["error"])


def test_gedit_on_a_jsonl_file_says_what_gedit_reads(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ConfigError) as refused:
        load_samples(DataConfig(dataset=str(tmp_path / "m.jsonl"), dataset_format="gedit"))
    message = str(refused.value)
    assert "format gedit reads GEdit-Bench's dataset" in message and "a .jsonl file" in message
    assert "dataset_format manifest" in message and "not a .json/.jsonl" not in message


def test_auto_asks_every_registered_format_in_priority_order(tmp_path):
    """`auto` is a loop over the registry: a format registered with a lower `priority` than the manifest's is asked
    first, and reads the file with its own mapping."""
    from bench_lib.formats.base import JsonRecords
    from bench_lib.formats.jsonstream import first_record_keys
    from bench_lib.registry import FORMATS

    class Pictures(JsonRecords):
        description = "a manifest that calls its images `picture`"
        priority = FORMATS.get("manifest").priority - 1
        columns = {"source_image": "picture"}

        @classmethod
        def detect(cls, cfg):
            keys = first_record_keys(Path(cfg.dataset)) if Path(cfg.dataset).suffix == ".jsonl" else None
            return keys is not None and "picture" in keys

    Image.new("RGB", (24, 16), "red").save(tmp_path / "a.png")
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "x", "category": "c", "instruction": "i", "picture": "a.png"}) + "\n")
    with pytest.raises(ConfigError, match="source_image"):  # a plain manifest: no `source_image` column
        load_samples(DataConfig(dataset=str(path)))
    FORMATS.register("test-pictures", Pictures)
    try:
        assert detect_format(DataConfig(dataset=str(path))) is Pictures
        assert load_samples(DataConfig(dataset=str(path)))[0].source_image.size() == (24, 16)
        assert detect_format(DataConfig(dataset="data/demo/manifest.jsonl")).name == "manifest"
    finally:
        FORMATS.pop("test-pictures")


def test_parquet_of_image_paths_csv_and_single_files_work(tmp_path, monkeypatch):
    import datasets

    folder = tmp_path / "bench"
    rows = copy_demo(folder, 3)
    monkeypatch.chdir(folder)  # as a user writes it: image paths relative to where the parquet goes
    table = datasets.Dataset.from_list(rows)
    table.cast_column("source_image", datasets.Image()).to_parquet("images.parquet")
    table.to_csv("table.csv")
    monkeypatch.chdir(tmp_path)
    import pyarrow.parquet as pq

    stored = pq.read_table(folder / "images.parquet").column("source_image").to_pylist()
    assert stored[0] == {"bytes": None, "path": "images/physics_01.png"}  # the form that failed every row before
    for name in ("images.parquet", "table.csv"):
        assert identity_run(folder / name, tmp_path / name) == 0
        results = [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in results] == ["ok"] * 3, results
