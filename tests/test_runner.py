"""The run loop in one process: failures are recorded per sample, the editor is gone before the judge loads."""

import gc
import json
import weakref

import pytest
import torch
from PIL import Image
from test_data import write_images
from test_edit_stage import FakeCudaMemory, SlowLoadEditor, slow_editor  # noqa: F401  (a fixture)
from test_judge_stage import scripted_judge  # noqa: F401  (a fixture)

import bench_lib.edit_stage as edit_stage
import bench_lib.judge_stage as judge_stage
import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import EditResult, Judge
from bench_lib.config import ConfigError, JudgeConfig
from bench_lib.failures import RunFailed
from bench_lib.judges import Rubrics
from bench_lib.judging import Completion, TextPart
from bench_lib.preflight import preflight
from bench_lib.protocols import make_protocol
from bench_lib.store import read_results

PROTOCOL = {"protocol": make_protocol(JudgeConfig(), Rubrics(JudgeConfig().prompts_dir)), "category_map": {}}
SMOKE = {"editor_model": "tiny:qwen-image-edit", "editor_dtype": "float32", "judge_model": "tiny:qwen3-vl",
         "judge_dtype": "float32", "judge_min_digit_mass": 0.0,
         "editor_kwargs": {"num_inference_steps": 2, "height": 32, "width": 32, "true_cfg_scale": 1.0}}


def test_failures_are_per_sample_and_the_editor_is_freed_before_the_judge(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a.png")
    rows = [{"id": "ok", "category": "physics", "instruction": "melt it", "source_image": "a.png"},
            {"id": "missing", "category": "physics", "instruction": "melt it", "source_image": "nope.png"},
            {"id": "boom", "category": "causal", "instruction": "pop it", "source_image": "a.png"},
            {"id": "empty", "category": "social", "instruction": "", "source_image": "a.png"},
            {"id": "flat", "category": "social", "instruction": "paint it grey", "source_image": "a.png"},
            {"id": "oom", "category": "causal", "instruction": "grow it", "source_image": "a.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    pipeline_refs, freed_at_judge_load = [], []
    load_editor, load_judge = edit_stage.load_editor, judge_stage.load_judge

    def spy_load_editor(*args, **kwargs):
        editor = load_editor(*args, **kwargs)
        pipeline_refs.append(weakref.ref(editor.pipe))
        real_edit = editor.edit

        def edit(sample, image, *, seed):
            instruction = sample.instruction
            if instruction == "pop it":
                raise RuntimeError("injected editor failure")
            if instruction == "grow it":
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            if instruction == "paint it grey":
                return EditResult(Image.new("RGB", (32, 32), (128, 128, 128)))
            return real_edit(sample, image, seed=seed)

        editor.edit = edit
        return editor

    def spy_load_judge(*args, **kwargs):
        gc.collect()
        freed_at_judge_load.append(pipeline_refs[0]() is None)
        return load_judge(*args, **kwargs)

    monkeypatch.setattr(edit_stage, "load_editor", spy_load_editor)
    monkeypatch.setattr(judge_stage, "load_judge", spy_load_judge)
    out = tmp_path / "out"
    runner.run(config_from_dict({**SMOKE, "dataset": str(tmp_path / "m.jsonl"), "output_dir": str(out)}))

    assert freed_at_judge_load == [True]
    results = {r["id"]: r for r in read_results(out / "results.jsonl")}
    assert list(results) == ["ok", "missing", "boom", "empty", "flat", "oom"]
    assert results["oom"]["status"] == "edit_failed" and "out of memory" in results["oom"]["error"]
    assert results["flat"]["status"] == "ok" and results["flat"]["flags"] == ["constant_image"]
    assert results["ok"]["status"] == "ok" and 0 <= results["ok"]["score"] <= 10
    assert results["ok"]["flags"] == []
    assert results["missing"]["status"] == "invalid_input" and "file not found" in results["missing"]["error"]
    assert results["boom"]["status"] == "edit_failed" and "injected editor failure" in results["boom"]["error"]
    assert results["empty"]["status"] == "invalid_input" and results["empty"]["error"] == "instruction is empty"
    for row in results.values():
        if row["status"] != "ok":
            assert row["score"] is None
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["count"] == 2 and report["overall"]["failed"] == 4
    assert report["overall"]["flagged"] == 1 and report["categories"]["social"]["flags"] == {"constant_image": 1}
    assert report["overall"]["failed_by_status"] == {"edit_failed": 2, "invalid_input": 2}
    assert report["timings"]["edit_samples"] == 4 and report["timings"]["judge_samples"] == 2


class ScriptedJudge(Judge):
    """A test double behind the Judge interface (generate mode): answers each sample's prompt by its instruction
    (`texts[instruction]`: its answers in order), records the batch sizes, and breaks on the sample "crash"."""

    def __init__(self, texts):
        super().__init__(None, judge=JudgeConfig(judge_mode="generate"), device=None)
        self.texts = texts
        self.calls = []

    def generate(self, prompts):
        self.calls.append(len(prompts))
        instructions = [instruction_of(p) for p in prompts]
        if len(prompts) > 1 and "crash" in instructions:
            raise RuntimeError("batch failed")
        if instructions[0] == "crash":
            raise RuntimeError("this sample breaks the judge")
        return [Completion(self.texts[i].pop(0)) for i in instructions]

    def read_scales(self, requests):
        raise AssertionError("generate mode only")


def instruction_of(prompt) -> str:
    """The sample's instruction, as the default protocol's rubric shows it."""
    text = "".join(part.text for part in prompt.content if isinstance(part, TextPart))
    return text.split("Instruction: ", 1)[1].split("\n", 1)[0]


def judge_batch(judge, samples, outcomes, load_edited, *, max_pixels):
    protocol = PROTOCOL["protocol"]
    facts = {s.id: protocol.facts(s, {}) for s in samples}
    judge_stage.judge_batch(judge, samples, outcomes, load_edited, max_pixels=max_pixels, protocol=protocol,
                            facts=facts, mode=judge.judge_cfg.judge_mode)


def test_judge_failures_become_judge_failed_and_keep_what_the_judge_said(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "edit.png")
    from bench_lib.data import ImageRef, Sample

    samples = [Sample(index=i, id=name, category="physics", instruction=name,
                      source_image=ImageRef(path=tmp_path / "edit.png")) for i, name in
               enumerate(["good", "unparsed", "crash"])]
    outcomes = {s.id: judge_stage.JudgeOutcome() for s in samples}
    judge = ScriptedJudge({"good": ['fine {"instruction": 7, "consistency": 8, "quality": 9}'],
                           "unparsed": ["a", "b"]})
    from accelerate import PartialState

    PartialState()  # accelerate's logger needs the (single-process) state
    judge_batch(judge, samples, outcomes, lambda s: Image.open(tmp_path / "edit.png"), max_pixels=512 * 512)
    assert judge.calls == [3, 1, 1, 1, 1]  # the failing batch is retried one sample at a time (unparsed: asked twice)
    good = outcomes["good"].judgement
    assert outcomes["good"].status == "ok" and good.answers == {"instruction": 7.0, "consistency": 8.0, "quality": 9.0}
    assert good.rationale == "fine"
    assert outcomes["unparsed"].status == "judge_failed" and "did not parse" in outcomes["unparsed"].error
    assert outcomes["crash"].status == "judge_failed" and "breaks the judge" in outcomes["crash"].error
    record = judge_stage.judge_record("unparsed", outcomes["unparsed"], attempt=1)
    assert record["raw"] == ["a", "b"] and record["parse"] == "failed" and record["answers"] is None
    assert judge_stage.judge_record("crash", outcomes["crash"], attempt=1)["parse"] is None  # never answered


def test_a_judge_that_returns_too_few_answers_fails_those_samples(tmp_path):
    from accelerate import PartialState

    from bench_lib.data import ImageRef, Sample

    Image.new("RGB", (8, 8)).save(tmp_path / "edit.png")
    samples = [Sample(index=i, id=f"s{i}", category="physics", instruction="x",
                      source_image=ImageRef(path=tmp_path / "edit.png")) for i in range(2)]

    class ShortJudge(ScriptedJudge):
        def generate(self, prompts):
            return [Completion("{}")] * (len(prompts) - 1)  # one answer too few, whatever the batch

    PartialState()
    outcomes = {s.id: judge_stage.JudgeOutcome() for s in samples}
    judge_batch(ShortJudge({}), samples, outcomes, lambda s: Image.open(tmp_path / "edit.png"), max_pixels=64)
    assert [outcomes[s.id].status for s in samples] == ["judge_failed"] * 2
    assert all("returned 0 completions for 1 prompts" in outcomes[s.id].error for s in samples)  # retried one by one


def test_length_batches_group_similar_lengths_and_cover_every_item_once():
    lengths = [50.0, 10.0, 30.0, 10.0, 90.0, 20.0, 40.0]
    batches = judge_stage.length_batches(lengths, 3)
    assert batches == [[1, 3, 5], [2, 6, 0], [4]]  # sorted by length, ties in original order
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert judge_stage.length_batches([], 4) == []
    # dealt for accelerate's contiguous split: rank r of W gets batches r, r + W, ...
    assert judge_stage.deal(list("abcdefg"), 3) == list("adgbecf") and judge_stage.deal(list("ab"), 4) == list("ab")


def test_changing_the_score_formula_rescores_without_rejudging(tmp_path):
    out = tmp_path / "formula"
    cfg = {**SMOKE, "dataset": "data/demo/manifest.jsonl", "output_dir": str(out), "limit": 2, "editor": "blank",
           }
    runner.run(config_from_dict(cfg))
    first = read_results(out / "results.jsonl")
    runner.run(config_from_dict({**cfg, "score_formula": "mean", "score_weights": {"quality": 2}}))
    second = read_results(out / "results.jsonl")
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["reused_judgements"] == 2 and report["meta"]["score_formula"] == "mean"
    for a, b in zip(first, second):
        assert a["subscores"] == b["subscores"]
        sub = b["subscores"]
        assert a["score"] == pytest.approx((min(sub["instruction"], sub["consistency"]) * sub["quality"]) ** 0.5)
        assert b["score"] == pytest.approx((sub["instruction"] + sub["consistency"] + 2 * sub["quality"]) / 4)


def test_unknown_tiny_model_is_a_config_error():
    cfg = config_from_dict({**SMOKE, "dataset": "x.jsonl", "editor_model": "tiny:nope"})
    with pytest.raises(ConfigError, match="tiny:nope"):
        preflight(cfg)


def test_a_full_disk_is_fatal_not_a_sample_failure(tmp_path, monkeypatch):
    import errno

    from bench_lib.data import ImageRef, Sample
    from bench_lib.editors import EditResult

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    sample = Sample(index=0, id="a", category="c", instruction="x", source_image=ImageRef(path=tmp_path / "a.png"))

    class Editor:
        def edit(self, sample, image, *, seed):
            return EditResult(Image.new("RGB", (8, 8), "red"))

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(edit_stage, "save_png", full_disk)
    with pytest.raises(OSError, match="No space left"):
        edit_stage.edit_sample(Editor(), sample, seed=0, output_dir=tmp_path)


@pytest.mark.parametrize("editor", ["identity", "blank"])
def test_sanity_baseline_editors_and_in_run_baselines_agree(tmp_path, editor):
    """The baselines run as editors, and judged beside an editor in the same run (`baselines`). The in-run
    baseline of the same name judges the same pixels, so it must get the same scores."""
    from bench_lib.data import DataConfig, load_samples

    out = tmp_path / editor
    cfg = {**SMOKE, "dataset": "data/demo/manifest.jsonl", "output_dir": str(out), "limit": 3, "editor": editor,
           "baselines": "identity,blank", "judge_batch_size": 2}
    runner.run(config_from_dict(cfg))
    rows = read_results(out / "results.jsonl")
    assert [r["status"] for r in rows] == ["ok"] * 3
    source = load_samples(DataConfig(dataset="data/demo/manifest.jsonl", limit=1))[0].source_image.load()
    with Image.open(out / rows[0]["edited_image"]) as edited:
        if editor == "identity":
            assert edited.convert("RGB").tobytes() == source.tobytes() and rows[0]["flags"] == []
        else:
            assert edited.size == source.size and rows[0]["flags"] == ["constant_image"]
    same = read_results(out / "baselines" / f"{editor}.jsonl")
    other = read_results(out / "baselines" / f"{'blank' if editor == 'identity' else 'identity'}.jsonl")
    assert [r["id"] for r in same] == [r["id"] for r in rows] and all(r["status"] == "ok" for r in same + other)
    for row, base, different in zip(rows, same, other):
        assert base["subscores"] == pytest.approx(row["subscores"], abs=1e-4)
        assert base["score"] == pytest.approx(row["score"], abs=1e-4)
        assert abs(different["subscores"]["consistency"] - row["subscores"]["consistency"]) > 1e-3
    report = json.loads((out / "report.json").read_text())
    assert report["baselines"][editor]["overall"]["mean"] == pytest.approx(report["overall"]["mean"], abs=1e-4)
    assert set(report["categories"]) == set(report["baselines"]["blank"]["categories"])
    assert "| category | editor | identity | blank |" in (out / "report.md").read_text()
    # a resume without blank keeps the identity judgements and drops blank's outputs
    runner.run(config_from_dict({**cfg, "baselines": "identity"}))
    assert not (out / "baselines" / "blank.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert list(report["baselines"]) == ["identity"] and report["meta"]["reused_judgements"] == 3
    assert report["timings"]["attempt"] == 1  # attempt 2 judged nothing: its report shows attempt 1's timings


def test_fit_pixels_keeps_aspect_and_small_images():
    small = Image.new("RGB", (100, 50))
    assert judge_stage.fit_pixels(small, 512 * 512) is small
    big = judge_stage.fit_pixels(Image.new("RGB", (2000, 1000)), 512 * 512)
    assert big.size[0] * big.size[1] <= 512 * 512 and abs(big.size[0] / big.size[1] - 2.0) < 0.01


def test_human_scores_reach_the_report(tmp_path):
    import shutil

    demo = [json.loads(line) for line in open("data/demo/manifest.jsonl")][:4]
    for i, row in enumerate(demo):
        for key in ("source_image", "reference_image"):
            if row.get(key):
                (tmp_path / row[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f"data/demo/{row[key]}", tmp_path / row[key])
        row["rating"] = [1, 2, None, 4][i]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demo))
    out = tmp_path / "out"
    cfg = {**SMOKE, "dataset": str(tmp_path / "m.jsonl"), "output_dir": str(out), "editor": "identity",
           "columns": {"human_score": "rating"}}
    runner.run(config_from_dict(cfg))
    rows = read_results(out / "results.jsonl")
    assert [r["human_score"] for r in rows] == [1.0, 2.0, None, 4.0]
    agreement = json.loads((out / "report.json").read_text())["human_agreement"]
    assert agreement["overall"]["n"] == 3 and agreement["categories"]["physics"]["n"] == 2
    assert "Spearman" in (out / "report.md").read_text()


def test_a_requeued_slurm_job_resumes_even_with_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "requeue"
    cfg = {**SMOKE, "dataset": "data/demo/manifest.jsonl", "output_dir": str(out), "limit": 2, "editor": "identity",
           "overwrite": True}
    runner.run(config_from_dict(cfg))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    runner.run(config_from_dict(cfg))
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["attempt"] == 2 and meta["reused_edits"] == 2 and meta["reused_judgements"] == 2
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a first start: --overwrite does start over
    runner.run(config_from_dict(cfg))
    assert json.loads((out / "report.json").read_text())["meta"]["attempt"] == 1


@pytest.mark.usefixtures("slow_editor")
def test_each_stage_s_peak_memory_reaches_the_report(tmp_path, monkeypatch):
    """Peak device memory per rank and stage, measured on a "CUDA" rank (torch.cuda's statistics faked, models on
    CPU): the judge stage's peak starts from a reset, so an edit's transient peak is the edit stage's only."""
    memory = FakeCudaMemory()
    memory.install(monkeypatch)
    monkeypatch.setattr(runner, "device_name", lambda device: "test device")
    real_edit, real_load_judge = SlowLoadEditor.edit, judge_stage.load_judge

    def edit(self, sample, source, *, seed):
        memory.use(5000)  # activations, freed when the call returns
        memory.free(5000)
        return real_edit(self, sample, source, seed=seed)

    def load_judge(*args, device, device_map, **kwargs):
        judge = real_load_judge(*args, device=torch.device("cpu"), device_map=None, **kwargs)
        memory.use(1000)  # the judge's weights
        return judge

    monkeypatch.setattr(SlowLoadEditor, "edit", edit)
    monkeypatch.setattr(judge_stage, "load_judge", load_judge)
    memory.use(100)
    out = tmp_path / "out"
    runner.run(config_from_dict({**SMOKE, "editor": "test-slow-load", "dataset": "data/demo/manifest.jsonl",
                                 "limit": 2, "baselines": "", "output_dir": str(out)}))
    (rank,) = json.loads((out / "report.json").read_text())["timings"]["per_rank"]
    assert (rank["edit_max_memory_allocated"], rank["edit_max_memory_reserved"]) == (5100, 10200)
    assert (rank["judge_max_memory_allocated"], rank["judge_max_memory_reserved"]) == (1100, 2200)
    assert "| 0.00 / 0.00 | 0.00 / 0.00 |" in (out / "report.md").read_text()  # a few bytes: 0.00 GiB


@pytest.mark.usefixtures("slow_editor")
def test_models_are_fetched_before_the_edit_stage(tmp_path, monkeypatch):
    """The weights come into the node's cache in a step of their own (bench_lib.models.download_model), before the
    first editor load: never inside a timed stage, on every rank at once."""
    events = []
    real_download, real_load = runner.download_models, edit_stage.load_editor

    def download(*args, **kwargs):
        events.append("download")
        return real_download(*args, **kwargs)

    def load(*args, **kwargs):
        events.append("load editor")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(runner, "download_models", download)
    monkeypatch.setattr(edit_stage, "load_editor", load)
    runner.run(config_from_dict({**SMOKE, "editor": "test-slow-load", "dataset": "data/demo/manifest.jsonl",
                                 "limit": 1, "baselines": "", "output_dir": str(tmp_path / "out")}))
    assert events == ["download", "load editor"]


HOSTILE_IDS = ["../../escape", "a/b", "a_b", "back\\slash", "nul\x00byte", "x" * 300,
               "猫が溶ける", "🧊🔥", "Cup", "cup"]


def test_hostile_ids_and_fields_end_to_end(tmp_path):
    cases = write_images(tmp_path / "img")
    rows = [{"id": name, "category": "physics", "instruction": "melt it", "source_image": f"img/{file}"}
            for name, (file, _) in cases.items()]
    rows += [{"id": i, "category": "causal", "instruction": "melt it", "source_image": "img/grey.png"}
             for i in HOSTILE_IDS]
    rows += [{"id": "no_instruction", "category": "physics", "source_image": "img/grey.png"},
             {"id": "number_instruction", "category": "physics", "instruction": 7, "source_image": "img/grey.png"},
             {"id": "escape_path", "category": "physics", "instruction": "x", "source_image": "../../etc/passwd"},
             {"id": "new_category", "category": "astronomy", "instruction": "melt it", "source_image": "img/grey.png"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    runner.run(config_from_dict({
        "dataset": str(tmp_path / "m.jsonl"), "output_dir": str(out), "max_image_pixels": 100_000,
        "editor": "identity", "judge_model": "tiny:qwen3-vl", "judge_dtype": "float32", "judge_min_digit_mass": 0.0}))

    results = {r["id"]: r for r in read_results(out / "results.jsonl")}
    assert list(results) == [r["id"] for r in rows]  # every sample once, in dataset order
    for name, (_, expected) in cases.items():
        assert results[name]["status"] == ("invalid_input" if expected is None else "ok"), results[name]
    for i in HOSTILE_IDS + ["new_category"]:
        assert results[i]["status"] == "ok", results[i]
    assert results["new_category"]["rubric"] == "default"
    for i in ("no_instruction", "number_instruction", "escape_path"):
        assert results[i]["status"] == "invalid_input" and results[i]["error"]
    edits = [results[i]["edited_image"] for i in results if results[i]["edited_image"]]
    assert len({e.casefold() for e in edits}) == len(edits)  # unique file names, even case-insensitively
    for edit in edits:
        path = (out / edit).resolve()
        assert path.parent == (out / "edits").resolve() and path.is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["failed_by_status"] == {"invalid_input": 8}


@pytest.mark.usefixtures("scripted_judge")
def test_a_run_whose_every_ok_row_is_a_failure_policy_fill_in_scored_nothing(tmp_path):
    """failure_policy reference fills in the answers of a judgement that did not parse (RE-Edit: no / 5 / [5, 5]),
    which makes the row `ok`: a judge whose every answer failed to parse would pass for a finished run with a
    headline made only of fill-ins. Such a run scored nothing: its reports are written, then it fails (exit 1)."""
    from test_judge_stage import ScriptedJudge, write_manifest

    judge = ScriptedJudge
    out = tmp_path / "out"
    cfg = {"dataset": str(write_manifest(tmp_path / "data", 3)), "output_dir": str(out), "editor": "identity",
           "judge": "test-scripted", "baselines": "", "protocol": "re_edit", "failure_policy": "reference"}
    judge.mode = "unparsed"
    with pytest.raises(RunFailed, match=r"nothing was scored: no answer of the judge parsed for any of the 3 "
                                        r"samples: the 3 ok row\(s\) hold only the values failure_policy reference"):
        runner.run(config_from_dict(cfg))
    rows = read_results(out / "results.jsonl")  # the whole report set is written first
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["fills"]["filled"] for r in rows)
    judge.mode = "answer"  # answers that parse: the same settings score
    runner.run(config_from_dict({**cfg, "output_dir": str(tmp_path / "answered")}))
    assert {r["judge_parse"] for r in read_results(tmp_path / "answered" / "results.jsonl")} == {"ok"}


def test_a_resume_after_the_judge_s_weights_were_saved_again_in_place_is_refused(tmp_path, capsys):
    """A local model folder is in the fingerprint by its path: weights saved again in place (a judge converted anew,
    a training job's output) would judge the rest of a resumed run while its kept judgements came from the old
    ones. The attempt records each model's hashes; a resume compares them, names the model and refuses (exit 2)."""
    import shutil

    from conftest import copy_demo, identity_run

    from bench_lib.models import resolve_model

    judge = tmp_path / "judge"
    shutil.copytree(resolve_model("tiny:qwen3-vl"), judge)
    rows = copy_demo(tmp_path / "data", 2)
    manifest = tmp_path / "data" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    args = ["--config", "configs/smoke.yaml", "--judge_model", str(judge), "--judge_dtype", "float32",
            "--judge_min_digit_mass", "0", "--limit", "1"]
    assert identity_run(manifest, out, *args) == 0
    kept = (out / "results.jsonl").read_bytes()
    weights = next(judge.glob("*.safetensors"))
    changed = bytearray(weights.read_bytes())
    changed[-1] ^= 1  # one bit of the last tensor: the same file layout, other weights
    weights.write_bytes(bytes(changed))
    capsys.readouterr()
    assert identity_run(manifest, out, *args[:-2], "--limit", "2") == 2  # a resume that would judge one more
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model weights changed" in err and f"judge {str(judge)!r} weights_sha256" in err
    assert (out / "results.jsonl").read_bytes() == kept and len(json.loads((out / "run.json").read_text())[
        "history"]) == 1  # nothing changed


def test_a_source_image_replaced_in_place_is_edited_and_judged_again_on_resume(tmp_path):
    """A manifest is identified by its own bytes, which name image files by path: a source image replaced in place
    left the manifest's identity as it was, and a resume kept the edit and the judgements of the old image. Each
    attempt records the digest of every sample's image files; a changed one is redone (its baselines too)."""
    from conftest import copy_demo, identity_run

    def run(folder, out):
        return identity_run(folder / "manifest.jsonl", out, "--judge_model", "tiny:qwen3-vl", "--judge_dtype",
                            "float32", "--judge_min_digit_mass", "0", "--baselines", "identity", "--gallery",
                            "false")

    rows = copy_demo(tmp_path / "data", 2)
    (tmp_path / "data" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert run(tmp_path / "data", out) == 0
    first = read_results(out / "results.jsonl")
    replaced = tmp_path / "data" / rows[0]["source_image"]
    with Image.open(replaced) as image:
        image.transpose(Image.Transpose.ROTATE_180).resize((40, 56)).save(replaced)
    assert run(tmp_path / "data", out) == 0
    resumed = read_results(out / "results.jsonl")
    assert [r["attempts"] for r in resumed] == [{"edit": 2, "judge": 2}, {"edit": 1, "judge": 1}]
    assert abs(resumed[0]["score"] - first[0]["score"]) > 1e-3 and resumed[1] == first[1]  # the new image's score
    with Image.open(out / resumed[0]["edited_image"]) as image:
        assert image.size == (40, 56)  # the identity editor's copy of the new source
    baseline = read_results(out / "baselines" / "identity.jsonl")
    assert [r["attempts"]["judge"] for r in baseline] == [2, 1]


def test_every_rank_runs_the_variants_the_main_process_listed(tmp_path, monkeypatch):
    """Each process expanded the sweep itself: a training job that saved a checkpoint while they started gave two
    ranks two variant lists, and units were paired by position (one variant's edits recorded as another's). The
    main process lists them once; here this process gets the main process's list (a, b) while its own reading of
    the sweep (a, b, c) has one more."""
    from conftest import DEMO

    from bench_lib.distributed import Distributed

    listed = [("a", {}), ("b", {})]  # what the main process found

    class ThisRank(Distributed):
        calls = 0

        def on_main(self, fn):
            type(self).calls += 1
            return listed if type(self).calls == 1 else super().on_main(fn)

    monkeypatch.setattr(runner, "Distributed", ThisRank)
    cfg = config_from_dict({"dataset": str(DEMO / "manifest.jsonl"), "limit": 1, "output_dir": str(tmp_path / "out"),
                            "editor": "identity", "baselines": "", "gallery": False, "judge_model": "tiny:qwen3-vl",
                            "judge_dtype": "float32", "judge_min_digit_mass": 0.0,
                            "sweep": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})
    runner.run(cfg)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["a", "b"]
    assert [v["name"] for v in json.loads((tmp_path / "out" / "sweep.json").read_text())["variants"]] == ["a", "b"]


def test_ranks_that_read_different_data_or_rubrics_stop_together():
    """Each process reads a local dataset and the rubrics itself: one rewritten while they started gives ranks
    other samples or other prompts than the fingerprint (the main process's reading) records."""
    class Ranks:
        def __init__(self, *seen):
            self.seen = list(seen)

        def all_gather(self, items):
            return self.seen

    found = {"dataset": "sha256:a", "samples": 3, "rubrics": {"default": "r1"}, "judge prompts": "p"}
    runner.check_same_inputs(Ranks(found, dict(found)), found)
    with pytest.raises(ConfigError, match="the dataset changed while the processes read them"):
        runner.check_same_inputs(Ranks(found, {**found, "dataset": "sha256:b"}), found)
    with pytest.raises(ConfigError, match="the rubrics changed while"):
        runner.check_same_inputs(Ranks(found, {**found, "rubrics": {"default": "r2"}}), found)


def two_image_run(tmp_path, baselines: str):
    """A manifest of two samples whose sources are image files (a, b), and the config of an identity-editor run of
    it with the scripted judge and `baselines`: (data folder, output folder, config mapping)."""
    folder, out = tmp_path / "data", tmp_path / "out"
    folder.mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (16, 16), colour).save(folder / name)
    (folder / "m.jsonl").write_text("".join(json.dumps({"id": i, "category": "physics", "instruction": f"do {i}",
                                                        "source_image": f"{i}.png"}) + "\n" for i in "ab"))
    return folder, out, {"dataset": str(folder / "m.jsonl"), "output_dir": str(out), "editor": "identity",
                         "judge": "test-scripted", "baselines": baselines, "gallery": False}


@pytest.mark.usefixtures("scripted_judge")
@pytest.mark.parametrize("stage", ["edit", "judge", "plan"])
def test_a_replaced_image_is_redone_even_after_the_resume_that_found_it_was_stopped(tmp_path, monkeypatch, stage):
    """A resume records the image files' new digests when it starts: stopped before it redid the sample (killed,
    an early stop, the judge's budget), it left the next resume nothing to compare, which kept the old image's
    edit, judgement and baseline judgement. Records written at the start supersede them on disk; `plan`: stopped
    before those are written (the new digests are recorded only after them)."""
    folder, out, cfg = two_image_run(tmp_path, "identity")
    runner.run(config_from_dict(cfg))
    Image.new("RGB", (24, 8), "green").save(folder / "a.png")  # replaced in place: the manifest is unchanged

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        if stage == "plan":
            m.setattr(runner, "forget_replaced", stopped)
        else:
            m.setattr(edit_stage.EditStage if stage == "edit" else judge_stage.JudgeStage, "run", stopped)
        with pytest.raises(KeyboardInterrupt):
            runner.run(config_from_dict(cfg))
    runner.run(config_from_dict(cfg))
    rows = read_results(out / "results.jsonl")
    redone = {"edit": 2 if stage == "judge" else 3, "judge": 3}
    assert [r["attempts"] for r in rows] == [redone, {"edit": 1, "judge": 1}]
    with Image.open(out / rows[0]["edited_image"]) as image:
        assert image.size == (24, 8)  # the identity editor's copy of the new image
    assert [r["attempts"]["judge"] for r in read_results(out / "baselines" / "identity.jsonl")] == [3, 1]


@pytest.mark.usefixtures("scripted_judge")
def test_a_replaced_image_is_judged_anew_by_a_baseline_the_resume_that_found_it_did_not_run(tmp_path):
    """Baselines may change between attempts: the resume that found the image replaced (and recorded its new
    digest) superseded only the baselines it ran, so a later attempt that ran the others again kept their
    judgements of the old image."""
    folder, out, cfg = two_image_run(tmp_path, "identity,blank")
    runner.run(config_from_dict(cfg))
    Image.new("RGB", (24, 8), "green").save(folder / "a.png")  # replaced in place: the manifest is unchanged
    runner.run(config_from_dict({**cfg, "baselines": "blank"}))
    runner.run(config_from_dict(cfg))
    for name, attempts in (("identity", [3, 1]), ("blank", [2, 1])):
        assert [r["attempts"]["judge"] for r in read_results(out / "baselines" / f"{name}.jsonl")] == attempts, name


@pytest.mark.usefixtures("scripted_judge")
def test_a_sample_with_several_sources_is_invalid_input_under_a_protocol_that_shows_one(tmp_path, monkeypatch):
    """KRIS-Bench's several-source samples through a protocol whose views show one source (default, re_edit, ...):
    the judge compared the edit, made from every source, with the first alone, and the score counted. Such a
    sample is invalid_input, saying why, also when a folder that judged it so before is resumed."""
    from test_kris_multi import SEVERAL, ComposingEditor, kris_folder

    from bench_lib.backends import EDITORS, register_editor

    register_editor("test-composing")(ComposingEditor)
    try:
        cfg = {"dataset": str(kris_folder(tmp_path / "KRIS_Bench")), "output_dir": str(tmp_path / "out"),
               "editor": "test-composing", "judge": "test-scripted", "baselines": "", "protocol": "default",
               "gallery": False}
        with monkeypatch.context() as m:  # a folder judged before the check: its several-source rows scored
            m.setattr(runner, "one_source_only", lambda samples, protocol: samples, raising=False)
            runner.run(config_from_dict(cfg))
        assert {r["id"]: r["status"] for r in read_results(tmp_path / "out" / "results.jsonl")}[SEVERAL[0]] == "ok"
        runner.run(config_from_dict(cfg))
        rows = {r["id"]: r for r in read_results(tmp_path / "out" / "results.jsonl")}
        for sample_id in SEVERAL:
            assert rows[sample_id]["status"] == "invalid_input" and rows[sample_id]["score"] is None
            assert "3 source images and protocol 'default' shows the judge one" in rows[sample_id]["error"]
        assert sorted(r["status"] for r in rows.values()) == ["invalid_input"] * 2 + ["ok"] * 3
        kris = runner.run(config_from_dict({**cfg, "protocol": "kris", "output_dir": str(tmp_path / "kris")}))
        assert {r["status"] for r in read_results(kris / "results.jsonl")} == {"ok"}  # kris shows every source
    finally:
        EDITORS.pop("test-composing")


@pytest.mark.usefixtures("scripted_judge")
def test_a_run_whose_every_ok_row_is_a_source_scored_in_place_of_its_edit_scored_nothing(tmp_path):
    """failure_policy reference scores a sample whose edit failed on its source image (RE-Edit's rule), which
    makes the row `ok`: with every edit failed (here missing, and one file that is no image, so the same error does
    not stop the run early) the run passed for finished with a headline of the sources' scores. It scored no edit:
    its reports are written, then it fails (exit 1)."""
    from test_judge_stage import write_manifest

    edits, out = tmp_path / "edits", tmp_path / "out"
    edits.mkdir()
    (edits / "s02.png").write_bytes(b"not a png")
    cfg = {"dataset": str(write_manifest(tmp_path / "data", 3)), "output_dir": str(out), "editor": "precomputed",
           "edits_dir": str(edits), "judge": "test-scripted", "baselines": "", "protocol": "re_edit",
           "failure_policy": "reference", "gallery": False}
    with pytest.raises(RunFailed, match=r"nothing was scored: no edit was scored in any of the 3 samples: the 3 ok "
                                        r"row\(s\) are source images"):
        runner.run(config_from_dict(cfg))
    rows = read_results(out / "results.jsonl")  # the whole report set is written first
    assert [r["status"] for r in rows] == ["ok"] * 3 and all("edit_missing_scored_on_source" in r["flags"]
                                                             for r in rows)
    Image.new("RGB", (16, 16), "red").save(edits / "s01.png")  # one edit: the run scored it
    runner.run(config_from_dict(cfg))
    assert "edit_missing_scored_on_source" not in read_results(out / "results.jsonl")[1]["flags"]
    assert "cannot read the edit" in read_results(out / "results.jsonl")[2]["error"]


def test_an_attempt_that_could_not_record_the_weights_does_not_hide_a_change_from_the_ones_before(tmp_path):
    """A hub model's resolved commit is null when an attempt runs where the model is not in the local hub cache (a
    node with another HF_HOME): compared with that attempt alone, a resume with another commit passed, keeping the
    first commit's judgements beside the new one's. Each hash is compared with the latest attempt that has it."""
    from bench_lib.store import RunFolder, write_json

    def models(commit):
        return {"editor": {"id": "identity"},
                "judge": {"id": "org/judge", "source": "hub", "resolved_revision": commit}}

    out = tmp_path / "out"
    out.mkdir()
    history = [{"attempt": 1, "models": models("a" * 40)}, {"attempt": 2, "models": models(None)}]
    write_json(out / "run.json", {"fingerprint": {}, "attempts": 2, "history": history})
    runner.check_same_weights(RunFolder(out), models("a" * 40))  # the same commit resumes
    with pytest.raises(ConfigError, match=r"judge 'org/judge' resolved_revision aaaaaaaaaaaa… -> bbbbbbbbbbbb…"):
        runner.check_same_weights(RunFolder(out), models("b" * 40))


@pytest.mark.usefixtures("scripted_judge")
def test_a_variant_added_under_a_lower_limit_gets_no_baseline_judgements_of_samples_it_did_not_load(tmp_path):
    """A sweep copies the baselines' judgements between its variant folders. It copied them for every sample any
    folder held, also those `limit` left out now: the new variant folder then held a judgement of an image whose
    digest it never recorded, so once the image was replaced and the limit raised, that folder found nothing
    replaced, kept the old image's judgement and gave it to the other folder too. Only the run's samples are copied."""
    folder, out, cfg = two_image_run(tmp_path, "identity")
    runner.run(config_from_dict({**cfg, "sweep": [{"name": "A"}]}))
    Image.new("RGB", (24, 8), "green").save(folder / "b.png")  # replaced in place: the manifest is unchanged
    both = {**cfg, "sweep": [{"name": "A"}, {"name": "B"}]}
    runner.run(config_from_dict({**both, "limit": 1}))  # B is new, and loads only `a`
    assert [r["id"] for r in read_results(out / "B" / "baselines" / "identity.jsonl")] == ["a"]
    assert not any('"id": "b"' in path.read_text() for path in (out / "B" / "records").glob("*.baseline-*"))
    runner.run(config_from_dict(both))  # the new image of `b` is judged once (in A, attempt 3) and copied to B
    assert [r["attempts"]["judge"] for r in read_results(out / "A" / "baselines" / "identity.jsonl")] == [1, 3]
    assert [r["attempts"]["judge"] for r in read_results(out / "B" / "baselines" / "identity.jsonl")] == [1, 2]
