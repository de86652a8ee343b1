"""End to end with a benchmark's own prompt file and failure rules: prompt files written here in the structure of
the benchmark's (invented text), a judge whose written answers are scripted per sample and view (some of them
unparsable), failure_policy reference; the report equals what the benchmark's published rules give on those
answers, worked out here independently. The judge-input log gives back the exact text the judge saw."""

import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.backends import JUDGES, Judge, register_judge
from bench_lib.config import ConfigError
from bench_lib.judging import Completion, ImagePart, TextPart
from bench_lib.protocols import make_protocol
from bench_lib.store import read_run

RE_EDIT_YAML = """\
data:
  json_path: "/nowhere"
prompts:
{dimensions}
  instruction_following:
    system_prompt: |
      MARK-IF Grade how the edit follows its instruction.
    user_prompt_template: |
      Instruction: {{edit_instruction}}
      Reply as JSON:
      {{{{
      "score": <0-10>,
      "reasoning": "..."
      }}}}
  sc_metric:
    system_prompt: |
      MARK-SC Two numbers, success then over-editing.
    user_prompt_template: |
      Instruction: {{edit_instruction}}
      {{{{"score": [a, b], "reasoning": "..."}}}}
"""
DIMENSION = """\
  {name}:
    system_prompt: |
      MARK-DIM-{name} Judge {name} plausibility only.
        Indented rule line.
    user_prompt_template: |

      Context:
        Described: {{original_description}}
        Instruction: {{edit_instruction}}
        Challenge: {{rationale}}
      Output JSON format:
      {{{{
      "score" : "yes" or "no",
      "reasoning" : "why"
      }}}}
"""


class ScriptedWriter(Judge):
    """A generate-mode test double registered through the real registry: answers each prompt with the script's
    text for (the sample's instruction, the view's mark); records every prompt it was sent."""

    script: dict = {}
    seen: list = []

    def generate(self, prompts):
        out = []
        for prompt in prompts:
            text = "".join(p.text for p in prompt.content if isinstance(p, TextPart))
            type(self).seen.append((prompt.system, [p.text if isinstance(p, TextPart) else p.image
                                                    for p in prompt.content]))
            mark = re.search(r"MARK-(\S+)", text).group(1)
            instruction = re.search(r"Instruction: (.+)", text).group(1)
            out.append(Completion(self.script[(instruction, mark)]))
        return out

    def read_scales(self, requests):
        raise AssertionError("verbatim prompts are judged in generate mode")


@pytest.fixture
def writer():
    register_judge("test-writer")(ScriptedWriter)
    ScriptedWriter.script, ScriptedWriter.seen = {}, []
    yield ScriptedWriter
    JUDGES.pop("test-writer")


def re_edit_files(tmp_path: Path, rows: list[dict]) -> tuple[Path, Path]:
    names = ("physical", "environmental", "cultural", "causal", "referential")
    prompts = tmp_path / "repo" / "single_scoring_part_vllm" / "scoring_config.yaml"
    prompts.parent.mkdir(parents=True)
    prompts.write_text(RE_EDIT_YAML.format(dimensions="".join(DIMENSION.format(name=n) for n in names)))
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 24), "red").save(data / "a.png")
    (data / "m.jsonl").write_text("".join(json.dumps({**r, "source_image": "a.png"}) + "\n" for r in rows))
    return prompts, data / "m.jsonl"


def yes_no(answer: str) -> str:
    return json.dumps({"score": answer, "reasoning": "scripted"})


def test_re_edit_with_its_prompt_file_and_fill_ins_gives_its_published_numbers(writer, tmp_path):
    rows = [{"id": f"p{i}", "category": "physical", "instruction": f"melt {i}", "description": f"ice {i}",
             "rationale": f"heat {i}"} for i in range(4)]
    rows += [{"id": f"c{i}", "category": "causal", "instruction": f"drop {i}", "description": f"cup {i}",
              "rationale": ""} for i in range(3)]
    prompts, manifest = re_edit_files(tmp_path, rows)
    broken = "I think it is fine."  # no JSON: unparsable, twice (the re-ask repeats the prompt)
    reasoning = {"melt 0": yes_no("yes"), "melt 1": broken, "melt 2": yes_no("No"), "melt 3": yes_no("YES"),
                 "drop 0": yes_no("yes"), "drop 1": yes_no("no"), "drop 2": broken}
    follow = {"melt 0": 8, "melt 1": 6, "melt 2": None, "melt 3": 10, "drop 0": 3, "drop 1": 7.0, "drop 2": 9}
    sc = {"melt 0": [7, 9], "melt 1": [4, 2], "melt 2": [10, 10], "melt 3": None, "drop 0": [6, 8], "drop 1": [5, 1],
          "drop 2": [2, 9]}
    for r in rows:
        ins, dim = r["instruction"], f"DIM-{r['category']}"
        writer.script[(ins, dim)] = reasoning[ins]
        writer.script[(ins, "IF")] = broken if follow[ins] is None else json.dumps({"score": follow[ins],
                                                                                     "reasoning": "r"})
        writer.script[(ins, "SC")] = "```json\n{\"score\": 7}\n```" if sc[ins] is None else \
            "Here it is:\n" + json.dumps({"score": sc[ins], "reasoning": "r"})
    out = tmp_path / "out"
    cfg = {"dataset": str(manifest), "output_dir": str(out), "editor": "identity", "baselines": "",
           "judge": "test-writer", "protocol": "re_edit", "judge_mode": "generate",
           "judge_prompts": str(prompts.parents[1]),  # the benchmark's checkout: the protocol knows the file's path
           "judge_prompts_sha256": hashlib.sha256(prompts.read_bytes()).hexdigest(), "failure_policy": "reference"}
    runner.run(config_from_dict(cfg))
    run = read_run(out)
    report = run["report"]

    # RE-Edit's rules on these answers, by hand: an unparsed yes/no is "no", an unparsed IF 5.0, an unparsed SC
    # [5.0, 5.0]; yes-rate = yes / samples * 100 per category; IF and SC pooled means; SC = min of the two.
    yes = {"physical": [1, 0, 0, 1], "causal": [1, 0, 0]}
    if_values = [8, 6, 5.0, 10, 3, 7, 9]
    sc_values = [7, 2, 10, 5.0, 6, 1, 2]
    for category, answers in yes.items():
        assert report["categories"][category]["metrics"]["yes_rate"]["mean"] == pytest.approx(
            100 * sum(answers) / len(answers))
    overall = report["overall"]["metrics"]
    assert overall["instruction_following"]["mean"] == pytest.approx(sum(if_values) / 7)
    assert overall["semantic_consistency"]["mean"] == pytest.approx(sum(sc_values) / 7)
    assert [r["status"] for r in run["rows"]] == ["ok"] * 7
    assert sum(r["fills"]["filled"] for r in run["rows"]) == 2 + 1 + 2  # two yes/no, one IF, one SC pair
    assert report["failure_counts"] == {"unparsed_judgements": 4, "filled": 5, "guessed": 0, "dropped": 0,
                                        "zeroed": 0, "edits_scored_on_source": 0, "records_left_out": 0}
    assert report["comparable"]["comparable"] is False
    assert report["comparable"]["differs"][0].startswith("judge ")  # verbatim prompts, full size, reference policy
    markdown = (out / "report.md").read_text()
    assert "Comparable with RE-Edit's published table: no** (judge " in markdown
    prov = report["provenance"]["judge_prompts"]
    assert prov["sha256"] == cfg["judge_prompts_sha256"] and prov["wording"] == "verbatim"
    assert prov["images"] == "full" and prov["failure_policy"] == "reference"

    # the judge-input log rebuilds exactly what the judge was sent: the texts in full, the images by digest
    log = [json.loads(line) for line in (out / "judge_inputs.jsonl").read_text().splitlines()]
    first = next(entry for entry in log if entry["id"] == "p1" and entry["view"] == "reasoning")
    user = first["messages"][-1]["content"]
    text = "".join(part["text"] for part in user if "text" in part)
    seen = next(parts for system, parts in writer.seen
                if any(isinstance(p, str) and "melt 1" in p and "MARK-DIM" in p for p in parts))
    assert text == "".join(p for p in seen if isinstance(p, str))
    assert text.startswith("MARK-DIM-physical Judge physical plausibility only.\n  Indented rule line.\n\n\n")
    assert "Described: ice 1\n" in text and "Challenge: heat 1\n" in text and '{\n"score" : "yes"' in text
    assert [p["size"] for p in user if "size" in p] == [[40, 24], [40, 24]]  # full resolution, no label texts
    image = next(p for p in seen if not isinstance(p, str))
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\0".encode() + image.tobytes()).hexdigest()
    assert user[0]["image_sha256"] == digest
    assert all(system is None for system, _ in writer.seen)  # RE-Edit sends its system prompt in the user turn


def test_a_prompt_file_without_a_protocols_name_or_with_another_digest_is_one_config_error(tmp_path):
    prompts, manifest = re_edit_files(tmp_path, [{"id": "a", "category": "physical", "instruction": "x"}])
    base = {"dataset": str(manifest), "output_dir": str(tmp_path / "o"), "protocol": "re_edit", "editor": "identity",
            "judge_mode": "generate", "judge_prompts": str(prompts), "judge_model": "tiny:qwen3-vl"}

    def preflight(cfg):  # the check the preflight (and the run) makes before any model loads
        make_protocol(cfg.judge, None)

    # the benchmark's texts and the paraphrase never share a fingerprint (the protocol's prompt digest)
    verbatim = make_protocol(config_from_dict({**base, "judge_prompts_sha256": ""}).judge, None)
    own = make_protocol(config_from_dict({**base, "judge_prompts": ""}).judge, None)
    assert verbatim.digest() != own.digest() and verbatim.prompt_file.sha256 == hashlib.sha256(
        prompts.read_bytes()).hexdigest()

    with pytest.raises(ConfigError, match=r"`judge_prompts_sha256` does not match .*expected 0{64}, got [0-9a-f]{64}"):
        preflight(config_from_dict({**base, "judge_prompts_sha256": "0" * 64}))
    preflight(config_from_dict({**base, "judge_mode": "logits"}))  # read along RE-Edit's reply layout
    prompts.write_text(prompts.read_text().replace("  sc_metric:", "  other_metric:"))
    with pytest.raises(ConfigError, match=r"no key 'prompts.sc_metric.system_prompt'"):
        preflight(config_from_dict(base))
    with pytest.raises(ConfigError, match="applies to re_edit, risebench, kris and viescore"):
        preflight(config_from_dict({**base, "protocol": "default"}))


# --- RISEBench, KRIS-Bench, VIEScore: the samples are told apart by their image's colour --------------------


class ColourWriter(Judge):
    """Answers each prompt with the script's text for (the colour of the prompt's last image, the view's mark)."""

    script: dict = {}
    seen: list = []

    def generate(self, prompts):
        out = []
        for prompt in prompts:
            text = "".join(p.text for p in prompt.content if isinstance(p, TextPart))
            image = [p.image for p in prompt.content if isinstance(p, ImagePart)][-1]
            type(self).seen.append((text, image.size))
            mark = re.findall(r"MARK-(\S+)", text)[-1]  # the last: VIEScore's prompts share their first part
            out.append(Completion(self.script[(image.getpixel((0, 0)), mark)]))
        return out

    def read_scales(self, requests):
        raise AssertionError("verbatim prompts are judged in generate mode")


@pytest.fixture
def colour_writer():
    register_judge("test-colour")(ColourWriter)
    ColourWriter.script, ColourWriter.seen = {}, []
    yield ColourWriter
    JUDGES.pop("test-colour")


COLOURS = [(200, 10 * i, 0) for i in range(12)]


def images(folder: Path, count: int, size=(48, 32)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        Image.new("RGB", size, COLOURS[i]).save(folder / f"i{i}.png")
        names.append(f"i{i}.png")
    return names


def run_verbatim(tmp_path: Path, dataset: Path, protocol: str, prompts: Path, file: Path, **more) -> dict:
    """A run with the benchmark's prompts (`prompts`: the file, or the checkout holding `file`)."""
    cfg = {"dataset": str(dataset), "output_dir": str(tmp_path / "out"), "editor": "identity", "baselines": "",
           "judge": "test-colour", "protocol": protocol, "judge_mode": "generate", "judge_prompts": str(prompts),
           "judge_prompts_sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "failure_policy": "reference",
           **more}
    runner.run(config_from_dict(cfg))
    return read_run(tmp_path / "out")


RISE_NAMES = ("prompt_consist", "prompt_reasoning", "prompt_reasoning_w_input", "prompt_generation",
              "prompt_spatial_ref", "prompt_spatial_ref_img", "prompt_spatial_ref_w_input", "prompt_spatial_qual",
              "prompt_spatial_cons", "prompt_logical_cons_ans", "prompt_logical_cons", "prompt_logical_txt",
              "prompt_logical_img", "prompt_logical_img_wo_q")


def rise_utils(path: Path) -> None:
    """A utils.py of RISEBench's structure: helper code, then one string constant per prompt (triple-quoted,
    formatted with instruct= / reference= where the evaluator formats it), each asking for a final score line."""
    lines = ["import base64\n\n\ndef dump(x):\n    return x\n\n"]
    for name in RISE_NAMES:
        placeholders = "" if name in ("prompt_generation", "prompt_spatial_qual", "prompt_logical_img_wo_q") else \
            "Instruction: {instruct}\n" + ("Reference: {reference}\n" if "ref" in name or "reasoning" in name
                                           or name.endswith(("_txt", "_ans")) else "")
        if name in ("prompt_spatial_ref_img", "prompt_logical_img", "prompt_logical_cons"):
            placeholders = "Instruction: {instruct}\n"
        lines.append(f'{name} = """MARK-{name} Score it.\n{placeholders}End with:\n**Final Score:** **X**"""\n\n')
    path.write_text("".join(lines))


def final(score) -> str:
    return f"Step 1: looked.\nStep 2: compared.\n**Final Score:** **{score}**" if score is not None else "unsure"


def test_risebench_with_its_prompt_file_counts_an_unparsed_sample_as_zero_in_accuracy(colour_writer, tmp_path):
    names = images(tmp_path / "data", 7, size=(1000, 500))
    records = [  # (category, C, R, P) with None: unparsable; logical: 0/1 answers
        ("temporal_reasoning", 5, 5, 5, {}), ("temporal_reasoning", 3, 1, 4, {"reasoning_img": "yes"}),
        ("causal_reasoning", 5, None, 5, {}), ("causal_reasoning", None, 4, None, {"consistency_free": True}),
        ("spatial_reasoning", 4, 5, 3, {}), ("logical_reasoning", 1, 1, None, {}),
        ("logical_reasoning", 1, 0, None, {})]
    data = []
    for i, (category, c, r, p, extra) in enumerate(records):
        data.append({"index": f"r{i}", "category": category, "instruction": f"do {i}", "image": names[i],
                     "subtask": "aabbcdd"[i],
                     **({"reference_txt": f"answer {i}"} if category == "logical_reasoning" else
                        {"reference": f"result {i}"}), **extra})
        colour = COLOURS[i]
        kind = {"temporal_reasoning": "", "causal_reasoning": "", "spatial_reasoning": "spatial_",
                "logical_reasoning": "logical_"}[category]
        if kind == "logical_":
            colour_writer.script[(colour, "prompt_logical_cons_ans")] = final(c)
            colour_writer.script[(colour, "prompt_logical_txt")] = final(r)
            continue
        cons = "prompt_spatial_cons" if kind else "prompt_consist"
        rea = "prompt_spatial_ref" if kind else ("prompt_reasoning_w_input" if "reasoning_img" in extra
                                                 else "prompt_reasoning")
        qua = "prompt_spatial_qual" if kind else "prompt_generation"
        if "consistency_free" not in extra:
            colour_writer.script[(colour, cons)] = final(c)
        colour_writer.script[(colour, rea)] = final(r)
        colour_writer.script[(colour, qua)] = final(p)
    (tmp_path / "data" / "data_total.json").write_text(json.dumps(data))
    prompts = tmp_path / "RISEBench" / "utils.py"
    prompts.parent.mkdir()
    rise_utils(prompts)
    run = run_verbatim(tmp_path, tmp_path / "data" / "data_total.json", "risebench", prompts.parent, prompts)

    # gpt_eval.py by hand: a sample with any unparsed answer has no score and counts 0 in accuracy; logical 0/1
    # answers become 4 * min(b, 1) + 1; score weights per category; halved (at least 1) when reasoning is 1.
    def score(category, c, r, p, free):
        if category == "logical_reasoning":
            c, r = 4 * min(c, 1) + 1, 4 * min(r, 1) + 1
            s = 0.3 * c + 0.7 * r
        elif free:
            s = 0.2 * p + 0.8 * r
        else:
            s = 0.3 * c + 0.5 * r + 0.2 * p
        return max(1.0, 0.5 * s) if r == 1 else s

    scores, accuracy = [], []
    for category, c, r, p, extra in records:
        free = "consistency_free" in extra
        needed = [r] + ([] if free else [c]) + ([] if category == "logical_reasoning" else [p])
        if any(v is None for v in needed):
            accuracy.append(0)
            continue
        scores.append(score(category, c, r, p, free))
        five = [4 * min(v, 1) + 1 for v in needed] if category == "logical_reasoning" else needed
        accuracy.append(int(all(v == 5 for v in five)))
    overall = run["report"]["overall"]["metrics"]
    assert overall["score"]["mean"] == pytest.approx(sum(scores) / len(scores))
    assert overall["accuracy"]["mean"] == pytest.approx(sum(accuracy) / len(accuracy))
    assert overall["accuracy"]["count"] == 7 and overall["score"]["count"] == 5
    statuses = [r["status"] for r in run["rows"]]
    assert statuses == ["ok", "ok", "judge_failed", "judge_failed", "ok", "ok", "ok"]
    assert run["report"]["failure_counts"]["zeroed"] == 2
    subtasks = run["report"]["subtasks"]  # per subtask, the same rules
    for name, members in {"a": [0, 1], "b": [2, 3], "d": [5, 6]}.items():
        assert subtasks[name]["metrics"]["accuracy"]["mean"] == pytest.approx(
            sum(accuracy[i] for i in members) / len(members))
    assert subtasks["b"]["metrics"]["score"]["mean"] is None and subtasks["a"]["category"] == "temporal_reasoning"
    # RISEBench sends 768 px on the long side, the text first
    assert {size for _, size in colour_writer.seen} == {(768, 384)}
    log = [json.loads(line) for line in (tmp_path / "out" / "judge_inputs.jsonl").read_text().splitlines()]
    entry = next(e for e in log if e["id"] == "r1" and e["view"] == "reasoning")
    parts = entry["messages"][0]["content"]
    assert "text" in parts[0] and [p["size"] for p in parts[1:]] == [[768, 384], [768, 384]]
    assert parts[0]["text"].startswith("MARK-prompt_reasoning_w_input Score it.\nInstruction: do 1\n"
                                       "Reference: result 1\n")
    assert run["report"]["provenance"]["judge_prompts"]["images"] == "long_side:768"
    markdown = (tmp_path / "out" / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if "temporal_reasoning" in line and "logical" in line)
    order = [header.index(f"{name}_reasoning") for name in ("temporal", "causal", "spatial", "logical")]
    assert order == sorted(order)  # RISEBench's column order, not the alphabet's


KRIS_NAMES = {"consistency": "prompt_consist", "quality": "prompt_quality",
              "instruction": "prompt_instruction_following", "viewpoint": "prompt_view_instruction_following",
              "knowledge": "prompt_dual_evaluation", "multi-consistency": "prompt_consist_multi",
              "multi-instruction": "prompt_instruction_multi", "temporal-consistency": "prompt_consist_temporal",
              "temporal-instruction": "prompt_instruction_temporal"}


def test_kris_with_its_prompt_file_drops_only_the_unparsed_dimension(colour_writer, tmp_path):
    folder = tmp_path / "Kris_Bench" / "ReasonEdit"
    folder.mkdir(parents=True)
    text = ['PREFIX = "shared "\n']
    for view, name in KRIS_NAMES.items():
        extra = "Knowledge: {explanation}\\n" if view == "knowledge" else ""
        text.append(f'{name} = ("MARK-{view} rate it.\\n"\n    "Instruction: {{instruct}}\\n{extra}"\n'
                    f'    "Answer as JSON.")\n')
    (folder / "prompts.py").write_text("".join(text))
    names = images(tmp_path / "data", 4)
    rows = [("count_change", 5, 4, 3, None), ("color_change", 2, None, 4, None),
            ("biology", 4, 5, 2, 1), ("chemistry", None, 3, 5, None)]
    lines = []
    for i, (category, c, q, ins, k) in enumerate(rows):
        lines.append({"id": f"k{i}", "category": category, "instruction": f"edit {i}", "source_image": names[i],
                      "explanation": f"fact {i}"})
        colour = COLOURS[i]

        def answer(key, value):
            return json.dumps({key: value, "reasoning": "r"}) if value is not None else "cannot tell"
        colour_writer.script[(colour, "consistency")] = answer("consistency_score", c)
        colour_writer.script[(colour, "quality")] = answer("quality_score", q)
        if category in ("biology", "chemistry"):
            knowledge = json.dumps({"instruction_score": ins, "knowledge_score": k}) if k is not None else \
                json.dumps({"instruction_score": ins})
            colour_writer.script[(colour, "knowledge")] = knowledge
        else:
            colour_writer.script[(colour, "instruction")] = answer("instruction_score", ins)
    (tmp_path / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = run_verbatim(tmp_path, tmp_path / "data" / "m.jsonl", "kris", folder / "prompts.py", folder / "prompts.py")

    # lmms-eval's KRIS rules by hand: an unparsed dimension is left out; each dimension's mean over the samples
    # that have it, on 0-100 as 25 (mean - 1); knowledge is 1 when instruction following is 2 or lower. The
    # chemistry sample's knowledge view answers without knowledge_score: that view (instruction and knowledge)
    # does not parse, and the sample keeps only its quality score.
    kept = {"consistency": [5, 2, 4], "quality": [4, 5, 3], "instruction": [3, 4, 2], "knowledge": [1]}
    metrics = run["report"]["overall"]["metrics"]
    for name, values in kept.items():
        assert metrics[name]["mean"] == pytest.approx(25 * (sum(values) / len(values) - 1)), name
        assert metrics[name]["count"] == len(values)
    per_sample = [(5 + 4 + 3) / 3, (2 + 4) / 2, (4 + 5 + 2 + 1) / 4, 3]
    assert metrics["score"]["mean"] == pytest.approx(25 * (sum(per_sample) / 4 - 1))
    assert run["report"]["failure_counts"]["dropped"] == 1 + 3  # k1's quality; k3's consistency and its view
    # KRIS-Bench's scripts send the filled-in text first, then the images (metrics_common.py)
    log = [json.loads(line) for line in (tmp_path / "out" / "judge_inputs.jsonl").read_text().splitlines()]
    entry = next(e for e in log if e["id"] == "k2" and e["view"] == "knowledge")
    parts = entry["messages"][-1]["content"]
    assert parts[0]["text"] == "MARK-knowledge rate it.\nInstruction: edit 2\nKnowledge: fact 2\nAnswer as JSON."
    assert all("image_sha256" in p for p in parts[1:]) and len(parts) == 3


def test_gedit_viescore_with_its_prompt_module_guesses_a_seeded_score_after_the_retry(colour_writer, tmp_path):
    import math
    import random

    module = tmp_path / "VIEScore" / "viescore" / "vie_prompts.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        '_context_no_delimit = """MARK-context You rate images.\nAnswer as JSON {"score": [...], "reasoning": ""}"""\n'
        '_prompts_0shot_two_image_edit_rule = "Two images: before and after.\\n"\n'
        '_prompts_0shot_tie_rule_SC = ("Instruction: <instruction>\\n"\n    "Rate success and over-editing.")\n'
        '_prompts_0shot_rule_PQ = """MARK-pq Rate naturalness and artifacts."""\n')
    names = images(tmp_path / "data", 3, size=(40, 30))
    answers = [([8, 6], [7, 9]), (None, [5, 4]), ([10, 9], None)]
    lines = []
    for i, (sc, pq) in enumerate(answers):
        lines.append({"id": f"g{i}", "category": "background_change", "instruction": f"swap {i}",
                      "source_image": names[i]})
        for mark, value in (("context", sc), ("pq", pq)):
            colour_writer.script[(COLOURS[i], mark)] = "no idea" if value is None else \
                json.dumps({"score": value, "reasoning": "r"})
    (tmp_path / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = run_verbatim(tmp_path, tmp_path / "data" / "m.jsonl", "viescore", module.parents[1], module)

    # VIEScore by hand: SC = min of the semantics list, PQ = min of the quality list, O = sqrt(SC * PQ); a view
    # that fails its retry gets random.randint(0, 10), a list of one (here seeded with the sample's seed and view)
    rows = {r["id"]: r for r in run["rows"]}
    values = []
    for i, (sc, pq) in enumerate(answers):
        seed = rows[f"g{i}"]["seed"]
        s = min(sc) if sc else random.Random(f"{seed}/semantics").randint(0, 10)
        q = min(pq) if pq else random.Random(f"{seed}/quality").randint(0, 10)
        values.append((s, q, math.sqrt(s * q)))
    category = run["report"]["categories"]["background_change"]["metrics"]
    for k, name in enumerate(("semantics", "quality", "overall")):
        assert category[name]["mean"] == pytest.approx(sum(v[k] for v in values) / 3), name
    assert run["report"]["failure_counts"]["guessed"] == 2
    assert [r["fills"]["guessed"] for r in run["rows"]] == [0, 1, 1]
    assert {size for _, size in colour_writer.seen} == {(40, 30)}  # full resolution


def test_protocol_auto_follows_the_datas_format_and_a_forced_format_must_fit(tmp_path):
    from bench_lib.preflight import preflight

    base = {"editor": "identity", "judge_model": "tiny:qwen3-vl", "output_dir": str(tmp_path / "o")}
    cfg = config_from_dict({**base, "dataset": "data/demo/re_edit.json"})
    assert cfg.judge.protocol == "auto"
    assert preflight(cfg).format == "re_edit" and cfg.judge.protocol == "re_edit"
    explicit = config_from_dict({**base, "dataset": "data/demo/re_edit.json", "protocol": "default"})
    preflight(explicit)
    assert explicit.judge.protocol == "default"
    _, manifest = re_edit_files(tmp_path, [{"id": "a", "category": "physical", "instruction": "x"}])
    plain = config_from_dict({**base, "dataset": str(manifest)})
    preflight(plain)
    assert plain.judge.protocol == "default"
    with pytest.raises(ConfigError, match=r"is not in format risebench: it has none of the columns index, image"):
        preflight(config_from_dict({**base, "dataset": str(manifest), "dataset_format": "risebench"}))
