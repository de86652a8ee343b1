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
from bench_lib.judging import Completion, TextPart
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
                                        "zeroed": 0}
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

    # strict on the same answers (a fresh folder): the four samples with an unparsed view fail, nothing is filled
    strict = tmp_path / "strict"
    runner.run(config_from_dict({**cfg, "output_dir": str(strict), "failure_policy": "strict"}))
    rows_strict = read_run(strict)["rows"]
    assert [r["status"] for r in rows_strict].count("judge_failed") == 4
    assert "fills" not in rows_strict[0]


def test_a_prompt_file_without_a_protocols_name_or_with_another_digest_is_one_config_error(tmp_path):
    prompts, manifest = re_edit_files(tmp_path, [{"id": "a", "category": "physical", "instruction": "x"}])
    base = {"dataset": str(manifest), "output_dir": str(tmp_path / "o"), "protocol": "re_edit", "editor": "identity",
            "judge_mode": "generate", "judge_prompts": str(prompts), "judge_model": "tiny:qwen3-vl"}

    def preflight(cfg):  # the check the preflight (and the run) makes before any model loads
        make_protocol(cfg.judge, None)

    with pytest.raises(ConfigError, match=r"`judge_prompts_sha256` does not match .*expected 0{64}, got [0-9a-f]{64}"):
        preflight(config_from_dict({**base, "judge_prompts_sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="needs `judge_mode: generate`"):
        preflight(config_from_dict({**base, "judge_mode": "logits"}))
    prompts.write_text(prompts.read_text().replace("  sc_metric:", "  other_metric:"))
    with pytest.raises(ConfigError, match=r"no key 'prompts.sc_metric.system_prompt'"):
        preflight(config_from_dict(base))
    with pytest.raises(ConfigError, match="applies to re_edit, risebench, kris and viescore"):
        preflight(config_from_dict({**base, "protocol": "default"}))
