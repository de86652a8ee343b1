"""Logits mode with a benchmark's own prompts (`judge_prompts`): the answer format's text up to each score is
supplied (or, where free text comes first, generated up to the score's marker), and the score is the expected value
over the scale's tokens at that position. Prompt files are written here in the structure of each benchmark's
(invented text); the judges are the tiny Qwen3-VL (in process) and an OpenAI-compatible server answering with
recorded-style completions (no server that returns log-probabilities runs on these CPUs)."""

import contextlib
import hashlib
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

import bench_lib.runner as runner
from bench_lib import config_from_dict
from bench_lib.config import ConfigError
from bench_lib.judging import (
    ONE_TO_FIVE,
    YES_NO,
    ZERO_TO_TEN,
    FinalScoreLine,
    NamedScoresJSON,
    Question,
    ScoreJSON,
    Slot,
    Supplied,
    Written,
    written_answer,
)
from bench_lib.protocols import kris, make_protocol
from bench_lib.store import read_run

COLOURS = [(220, 30 * i, 40) for i in range(6)]


def pictures(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (48, 32), COLOURS[i]).save(folder / f"i{i}.png")
    return [f"i{i}.png" for i in range(count)]


# --- look-alike prompt files and data, one per benchmark (the structure of the benchmark's; the words invented) ---


def re_edit_setup(root: Path) -> tuple[Path, Path]:
    dims = "".join(f"  {name}:\n    system_prompt: |\n      Judge {name} sense.\n    user_prompt_template: |\n"
                   f"      Seen: {{original_description}}\n      Asked: {{edit_instruction}}\n"
                   f"      Why: {{rationale}}\n"
                   f"      Reply {{{{\"score\": \"yes\" or \"no\", \"reasoning\": \"...\"}}}}\n"
                   for name in ("physical", "environmental", "cultural", "causal", "referential"))
    text = ("prompts:\n" + dims +
            "  instruction_following:\n    system_prompt: |\n      Grade following.\n    user_prompt_template: |\n"
            "      Asked: {edit_instruction}\n      Reply {{\"score\": <0-10>, \"reasoning\": \"...\"}}\n"
            "  sc_metric:\n    system_prompt: |\n      Two grades.\n    user_prompt_template: |\n"
            "      Asked: {edit_instruction}\n      Reply {{\"score\": [a, b], \"reasoning\": \"...\"}}\n")
    prompts = root / "RE-Edit" / "single_scoring_part_vllm" / "scoring_config.yaml"
    prompts.parent.mkdir(parents=True)
    prompts.write_text(text)
    names = pictures(root / "data", 2)
    rows = [{"id": "a", "category": "physical", "instruction": "melt it", "description": "ice", "rationale": "heat",
             "source_image": names[0]},
            {"id": "b", "category": "causal", "instruction": "drop it", "description": "cup", "rationale": "",
             "source_image": names[1]}]
    (root / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "data" / "m.jsonl", prompts


def risebench_setup(root: Path) -> tuple[Path, Path]:
    names = ("prompt_consist", "prompt_reasoning", "prompt_reasoning_w_input", "prompt_generation",
             "prompt_spatial_ref", "prompt_spatial_ref_img", "prompt_spatial_ref_w_input", "prompt_spatial_qual",
             "prompt_spatial_cons", "prompt_logical_cons_ans", "prompt_logical_cons", "prompt_logical_txt",
             "prompt_logical_img", "prompt_logical_img_wo_q")
    lines = ["import os\n\n"]
    for name in names:
        fill = "" if name in ("prompt_generation", "prompt_spatial_qual", "prompt_logical_img_wo_q") else \
            "Asked: {instruct}\n" + ("" if name in ("prompt_consist", "prompt_spatial_cons", "prompt_spatial_ref_img",
                                                     "prompt_logical_img", "prompt_logical_cons")
                                     else "Expected: {reference}\n")
        lines.append(f'{name} = """Look closely ({name}).\n{fill}Explain, then end with:\n**Final Score:** **X**"""\n')
    prompts = root / "RISEBench" / "utils.py"
    prompts.parent.mkdir(parents=True)
    prompts.write_text("".join(lines))
    images = pictures(root / "data", 2)
    data = [{"index": "t0", "category": "temporal_reasoning", "instruction": "age it", "image": images[0],
             "reference": "older"},
            {"index": "l1", "category": "logical_reasoning", "instruction": "solve it", "image": images[1],
             "reference_txt": "B2"}]
    (root / "data" / "data_total.json").write_text(json.dumps(data))
    return root / "data" / "data_total.json", prompts


def kris_setup(root: Path) -> tuple[Path, Path]:
    def constant(name, body):
        return f'{name} = """{body}"""\n'

    text = "".join([
        constant("prompt_consist", "Compare A and B outside the edit: {instruct}\nFirst explain, then give "
                                   '{{"reasoning": ..., "consistency_score": X}}'),
        constant("prompt_quality", 'Rate the look of the image.\nGive {{"reasoning": ..., "quality_score": X}}'),
        constant("prompt_instruction_following", 'Was the edit done: {instruct}\n'
                                                 'Give {{"instruction_score": X, "reasoning": ...}}'),
        constant("prompt_view_instruction_following", 'New view: {instruct}\n'
                                                      'Give {{"instruction_score": X, "reasoning": ...}}'),
        constant("prompt_dual_evaluation", 'Edit: {instruct}\nFact: {explanation}\nGive {{"instruction_score": X, '
                                           '"instruction_reasoning": ..., "knowledge_score": X, '
                                           '"knowledge_reasoning": ...}}'),
        constant("prompt_consist_multi", 'Sources, then the composite: {instruct}\n'
                                         'Give {{"consistency_score": X, "reasoning": ...}}'),
        constant("prompt_instruction_multi", 'Was the composite made: {instruct}\n'
                                             'Give {{"instruction_score": X, "reasoning": ...}}'),
        constant("prompt_consist_temporal", 'Frames, frame {N} predicted: {instruct}\n'
                                            'Give {{"consistency_score": X, "reasoning": ...}}'),
        constant("prompt_instruction_temporal", 'Does frame {N} follow: {instruct}\n'
                                                'Give {{"instruction_score": X, "reasoning": ...}}'),
    ])
    prompts = root / "Kris_Bench" / "ReasonEdit" / "prompts.py"
    prompts.parent.mkdir(parents=True)
    prompts.write_text(text)
    names = pictures(root / "data", 2)
    rows = [{"id": "k0", "category": "color_change", "instruction": "make it blue", "source_image": names[0]},
            {"id": "k1", "category": "chemistry", "instruction": "burn it", "explanation": "ash remains",
             "source_image": names[1]}]
    (root / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "data" / "m.jsonl", prompts


def viescore_setup(root: Path) -> tuple[Path, Path]:
    module = root / "VIEScore" / "viescore" / "vie_prompts.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        '_context_no_delimit = """You grade pictures.\nReply {"score": [...], "reasoning": "..."}"""\n'
        '_prompts_0shot_two_image_edit_rule = "A before and an after picture.\\n"\n'
        '_prompts_0shot_tie_rule_SC = "Asked: <instruction>\\nGrade success, then over-editing."\n'
        '_prompts_0shot_rule_PQ = """Grade how natural, then how clean."""\n')
    names = pictures(root / "data", 2)
    rows = [{"id": f"g{i}", "category": "color_alter", "instruction": f"tint {i}", "source_image": names[i]}
            for i in range(2)]
    (root / "data" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "data" / "m.jsonl", module


SETUPS = {"re_edit": re_edit_setup, "risebench": risebench_setup, "kris": kris_setup, "viescore": viescore_setup}


def logits_config(root: Path, protocol: str, **more) -> dict:
    dataset, prompts = SETUPS[protocol](root)
    return {"dataset": str(dataset), "output_dir": str(root / "out"), "editor": "identity", "baselines": "",
            "gallery": False, "protocol": protocol, "judge_mode": "logits", "judge_prompts": str(prompts),
            "judge_prompts_sha256": hashlib.sha256(prompts.read_bytes()).hexdigest(), **more}


def judge_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "judge_inputs.jsonl").read_text().splitlines()]


# --- the layouts: what is supplied, what the judge writes, where each value is read --------------------------


def test_each_verbatim_format_has_the_layout_of_its_benchmarks_answer():
    yes, a, b = Question("yes", YES_NO, ""), Question("a", ZERO_TO_TEN, ""), Question("b", ZERO_TO_TEN, "")
    assert ScoreJSON().reply_layout([yes]) == (Supplied('{"score": "'), Slot("yes"))  # RE-Edit's yes/no
    assert ScoreJSON().reply_layout([a]) == (Supplied('{"score": '), Slot("a"))  # RE-Edit's IF
    pair = (Supplied('{"score": ['), Slot("a"), Supplied(", "), Slot("b"))  # RE-Edit's SC, VIEScore's lists
    assert ScoreJSON().reply_layout([a, b]) == pair
    assert ScoreJSON(delimiter="||V^=^V||", wrap_single=True).reply_layout([a, b]) == pair
    # KRIS-Bench: per view the key order of its prompt; free text before a score is written by the judge
    ins, know = Question("instruction", ONE_TO_FIVE, ""), Question("knowledge", ONE_TO_FIVE, "")
    cons = Question("consistency", ONE_TO_FIVE, "")
    assert kris.FORMATS["instruction"].reply_layout([ins]) == (Supplied('{"instruction_score": '), Slot("instruction"))
    assert kris.FORMATS["consistency"].reply_layout([cons]) == (
        Written('"consistency_score":', '\n"consistency_score":'), Supplied(" "), Slot("consistency"))
    assert kris.FORMATS["knowledge"].reply_layout([ins, know]) == (
        Supplied('{"instruction_score": '), Slot("instruction"), Supplied(","),
        Written('"knowledge_score":', '\n"knowledge_score":'), Supplied(" "), Slot("knowledge"))
    # RISEBench: the reasoning, then the final-score line's marker
    assert FinalScoreLine().reply_layout([cons]) == (Written("Final Score", "\n\n**Final Score"), Supplied(":** **"),
                                                     Slot("consistency"))
    with pytest.raises(ValueError, match="no key order"):
        NamedScoresJSON(kris.ANSWER_KEYS).reply_layout([cons])


def test_the_reply_keeps_the_judges_text_through_the_marker_else_supplies_it():
    step = Written('"knowledge_score":', '\n"knowledge_score":')
    assert step.through(' fine",\n"knowledge_score": 4, "more": 1}') == ' fine",\n"knowledge_score":'
    assert step.through("no key at all  \n") == 'no key at all\n"knowledge_score":'
    # the layouts' own markers take the key as judges write it: other spacing or quotes, and RISEBench's line in
    # any case (the reply keeps the judge's own spelling)
    (kris_step,) = [s for s in kris.FORMATS["consistency"].reply_layout([Question("consistency", ONE_TO_FIVE, "")])
                    if isinstance(s, Written)]
    assert kris_step.through('ok. {"reasoning": "x", "consistency_score" : 4}') == \
        'ok. {"reasoning": "x", "consistency_score" :'
    assert kris_step.through("{'consistency_score': 4}") == "{'consistency_score':"
    rise = FinalScoreLine().reply_layout([Question("consistency", ONE_TO_FIVE, "")])[0]
    assert rise.through("Reasoning done. final score: 3") == "Reasoning done. final score"
    # the next value follows the answer of highest probability (the lower one on a tie)
    assert written_answer(ZERO_TO_TEN, [0.0] * 9 + [0.3, 0.7]) == "10"
    assert written_answer(ONE_TO_FIVE, [0.1, 0.4, 0.4, 0.1, 0.0]) == "2"
    assert written_answer(YES_NO, [float("nan"), float("nan")]) == "no"


def test_risebench_s_reply_is_cut_at_the_final_score_line_generate_mode_reads():
    """RISEBench's score is the number after the first "Final Score" label followed by digits: a mention of the
    final score in the judge's reasoning is not its score line, so logits mode reads after the line generate mode
    reads (a label the judge's text ends with, its number cut off, is one too; else the line is supplied)."""
    rise = FinalScoreLine().reply_layout([Question("reasoning", ONE_TO_FIVE, "")])[0]
    line = "**Final Score:** 2"
    mention = "Before I give the final score, compare the images: the cup did not fall.\n\n"
    for text, read_after in ((mention + line, mention + "**Final Score"),
                             (mention + "**Final Score:**", mention + "**Final Score"),  # the number cut off
                             ("The final score is low: the cup did not fall.",
                              "The final score is low: the cup did not fall.\n\n**Final Score"),
                             ("Final Scores: 4", "Final Scores")):
        assert rise.through(text) == read_after
    for text in (mention + line, "Final Scores: 4", "the final score follows.\nFinal Score: 4 (of 5)"):
        value = FinalScoreLine().parse(text, [Question("reasoning", ONE_TO_FIVE, "")])[0]["reasoning"]
        assert re.match(r"\D*(\d)", text[len(rise.through(text)):]).group(1) == str(int(value))  # read there


def test_a_view_whose_format_cannot_be_read_is_refused_by_name_before_any_model(tmp_path, monkeypatch):
    cfg = config_from_dict(logits_config(tmp_path, "kris", judge_model="tiny:qwen3-vl"))
    make_protocol(cfg.judge, None)  # every KRIS view has its layout
    monkeypatch.setitem(kris.FORMATS, "quality", NamedScoresJSON(kris.ANSWER_KEYS))  # a format without key order
    with pytest.raises(ConfigError, match=r"the 'quality' view's answer format cannot be read in logits mode"):
        make_protocol(cfg.judge, None)
    generate = config_from_dict(logits_config(tmp_path / "g", "kris", judge_model="tiny:qwen3-vl",
                                              judge_mode="generate"))
    make_protocol(generate.judge, None)  # generate mode reads it as written


# --- the tiny Qwen3-VL judge, in process: every sample gets a score; the value is the expected value there ------


def expected_value(model, processor, messages: list[dict], reply: str, scale) -> float:
    """The expected answer on `scale` after the chat `messages` and the started `reply`, from the model's logits,
    worked out here: digits renormalised (0-10: "1" then "0" is 10, after "1" a non-digit is 1); yes/no over every
    one-token spelling."""
    import torch

    tokenizer = processor.tokenizer
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + reply
    images = [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]
    inputs = processor(text=[text], images=[images], return_tensors="pt")

    def next_probs(extra: list[int]):
        batch = dict(inputs)
        if extra:
            ids = torch.tensor([extra])
            batch["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
            batch["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(ids)], dim=1)
            if "mm_token_type_ids" in inputs:
                batch["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ids)], dim=1)
        with torch.no_grad():
            return torch.softmax(model(**batch).logits[0, -1].double(), dim=-1)

    def token(text):
        ids = tokenizer.encode(text, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    probs = next_probs([])
    if scale is YES_NO:
        p = {w: sum(float(probs[t]) for t in {token(s) for s in (w, w.capitalize(), " " + w)} if t is not None)
             for w in ("yes", "no")}
        return p["yes"] / (p["yes"] + p["no"])
    digits = [token(str(d)) for d in range(10)]
    first = [float(probs[t]) for t in digits]
    if scale is not ZERO_TO_TEN:
        chosen = [first[int(a)] for a in scale.answers]
        return sum(v * p for v, p in zip(scale.values, chosen)) / sum(chosen)
    after = next_probs([digits[1]])
    p_ten = float(after[digits[0]]) / (1.0 - sum(float(after[t]) for t in digits[1:]))
    mass = sum(first)
    return (sum(d * p for d, p in enumerate(first)) + 9 * first[1] * p_ten) / mass


SUPPLIED = {  # view -> question -> what the reply must look like (the text the format fixes, the judge's own)
    "re_edit": {"yes": r'\{"score": "', "instruction_following": r'\{"score": ',
                "editing_success": r'\{"score": \[', "over_editing": r'\{"score": \[(\d|10), '},
    "viescore": {"editing_success": r'\{"score": \[', "over_editing": r'\{"score": \[(\d|10), ',
                 "naturalness": r'\{"score": \[', "artifacts": r'\{"score": \[(\d|10), '},
    "kris": {"consistency": r'(?s).*"consistency_score": ', "quality": r'(?s).*"quality_score": ',
             "instruction": r'\{"instruction_score": ',
             "knowledge": r'(?s)\{"instruction_score": [1-5],.*"knowledge_score": '},
    "risebench": {name: r"(?s).*Final Score:\*\* \*\*" for name in ("reasoning", "consistency", "plausibility")},
}


@pytest.fixture(scope="module")
def tiny_judge():
    """The tiny judge's model and processor, loaded here (not through the harness) to recompute its answers."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from bench_lib.models import resolve_model

    path = resolve_model("tiny:qwen3-vl")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype="float32").eval()
    return model, AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("protocol", sorted(SETUPS))
def test_every_benchmarks_verbatim_prompts_give_a_score_in_logits_mode(protocol, tmp_path, tiny_judge):
    cfg = logits_config(tmp_path, protocol, judge_model="tiny:qwen3-vl", judge_dtype="float32",
                        judge_min_digit_mass=0.0, judge_max_new_tokens=4, judge_batch_size=2)
    runner.run(config_from_dict(cfg))
    run = read_run(tmp_path / "out")
    assert [r["status"] for r in run["rows"]] == ["ok"] * len(run["rows"]) and len(run["rows"]) == 2
    assert all(r["score"] is not None and math.isfinite(r["score"]) for r in run["rows"])
    differs = run["report"]["comparable"]["differs"]
    assert not run["report"]["comparable"]["comparable"]
    assert any(d.startswith("logits mode (the benchmark's judge writes its answers") for d in differs)

    # the judge-input log shows the reply each answer was read after; from it (and the images, by digest) the
    # exact input is rebuilt, and the recorded answer is the expected value there
    model, processor = tiny_judge
    shown = {}
    for i in range(2):
        image = Image.open(tmp_path / "data" / f"i{i}.png").convert("RGB")
        digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\0".encode() + image.tobytes())
        shown[digest.hexdigest()] = image
    rows = {r["id"]: r for r in run["rows"]}
    read = 0
    for entry in judge_log(tmp_path / "out"):
        assert entry["messages"][-1]["role"] == "user"
        content = [{"type": "text", "text": p["text"]} if "text" in p else {"type": "image",
                                                                           "image": shown[p["image_sha256"]]}
                   for p in entry["messages"][-1]["content"]]
        for question in entry["questions"]:
            reply = question["reply_prefix"]
            assert question["text"] == "" and re.fullmatch(SUPPLIED[protocol][question["name"]], reply), question
            answer = rows[entry["id"]]["answers"][question["name"]]
            scale = _scale(protocol, entry["view"], question["name"], rows[entry["id"]])
            assert answer == pytest.approx(expected_value(model, processor, [{"role": "user", "content": content}],
                                                          reply, scale), abs=1e-4), (entry["view"], question)
            read += 1
    assert read == sum(v is not None for r in run["rows"] for v in r["answers"].values())


def _scale(protocol: str, view: str, name: str, row: dict):
    """The question's scale, as each benchmark declares it."""
    if protocol == "re_edit":
        return YES_NO if name == "yes" else ZERO_TO_TEN
    if protocol == "viescore":
        return ZERO_TO_TEN
    if protocol == "kris":
        return ONE_TO_FIVE
    from bench_lib.judging import ZERO_OR_ONE

    return ZERO_OR_ONE if row["category"] == "logical_reasoning" else ONE_TO_FIVE


# --- an OpenAI-compatible server: the reply goes as a final assistant message the server continues ------------


def top_logprobs(steps: list[list[tuple[str, float]]]) -> dict:
    """`choices[0].logprobs` as the chat-completions API returns it (per generated token, its top-k)."""
    def entry(token, p):
        return {"token": token, "logprob": math.log(p), "bytes": list(token.encode())}

    return {"content": [{**entry(*top[0]), "top_logprobs": [entry(t, p) for t, p in top]} for top in steps],
            "refusal": None}


DISTRIBUTION = [("4", 0.6), ("5", 0.3), ("The", 0.1)]  # every 1-5 reading: E = (4 * .6 + 5 * .3) / .9
WRITTEN = {  # the view's mark -> what the judge writes where free text comes first
    "Compare": 'A and B match.\n{"reasoning": "same", "consistency_score": 5, "extra": "dropped"}',
    "Rate the look": "Looks clean, no key written",
    "Edit:": ' "instruction_reasoning": "done",\n"knowledge_score": 2}',
}


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.bodies: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class RecordingHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, payload: dict):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "test"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.bodies.append(body)
        choice = {"index": 0, "finish_reason": "length"}
        if body.get("logprobs"):
            steps = [DISTRIBUTION] * body["max_tokens"]
            choice.update(message={"role": "assistant", "content": "4" * len(steps)}, logprobs=top_logprobs(steps))
        else:
            user = json.dumps(body["messages"][0]["content"])
            text = next(answer for mark, answer in WRITTEN.items() if mark in user)
            choice.update(message={"role": "assistant", "content": text}, finish_reason="stop")
        self._send({"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})


@contextlib.contextmanager
def recording_server():
    server = RecordingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_an_openai_judge_continues_the_supplied_reply_and_reads_each_value_in_turn(tmp_path):
    with recording_server() as server:
        cfg = logits_config(tmp_path, "kris", judge="openai", judge_model="m", judge_base_url=server.url,
                            judge_max_retries=0)
        runner.run(config_from_dict(cfg))
    run = read_run(tmp_path / "out")
    value = (4 * 0.6 + 5 * 0.3) / 0.9
    assert [r["status"] for r in run["rows"]] == ["ok", "ok"]
    for row in run["rows"]:
        assert all(v == pytest.approx(value) for k, v in row["answers"].items() if k != "knowledge")
    # the knowledge value: after "instruction_score": its answer of highest probability (4), the judge's own text
    # up to the knowledge key (what it wrote after the key is not kept), then the value read there
    replies = {(e["id"], q["name"]): q["reply_prefix"] for e in judge_log(tmp_path / "out") for q in e["questions"]}
    assert replies[("k1", "instruction")] == '{"instruction_score": '
    assert replies[("k1", "knowledge")] == ('{"instruction_score": 4, "instruction_reasoning": "done",\n'
                                           '"knowledge_score": ')
    assert replies[("k0", "consistency")] == 'A and B match.\n{"reasoning": "same", "consistency_score": '
    assert replies[("k0", "quality")] == 'Looks clean, no key written\n"quality_score": '  # never written: supplied
    assert next(r for r in run["rows"] if r["id"] == "k1")["answers"]["knowledge"] == pytest.approx(value)
    # what the server was sent: the reply as a final assistant message, continued (not a new turn)
    reads = [b for b in server.bodies if b.get("logprobs") and len(b["messages"]) > 1]
    sent = {b["messages"][-1]["content"] for b in reads}
    assert set(replies.values()) == sent
    assert all(b["messages"][-1]["role"] == "assistant" and b["continue_final_message"] is True
               and b["add_generation_prompt"] is False for b in reads)
    continued = [b for b in server.bodies if not b.get("logprobs") and len(b["messages"]) > 1]
    assert [b["messages"][-1]["content"] for b in continued] == ['{"instruction_score": 4,']


def test_the_answer_length_is_in_the_fingerprint_when_a_verbatim_format_has_the_judge_write(tmp_path):
    # free text before a score (RISEBench, KRIS) is written up to `judge_max_new_tokens`: a run with another limit
    # has other replies, so it never resumes into this one
    def fingerprint(**more):
        cfg = config_from_dict(logits_config(tmp_path / str(len(more)), "risebench", judge_model="tiny:qwen3-vl",
                                             **more))
        return runner.run_fingerprint(cfg, "sha256:x", runner.Rubrics(cfg.judge.prompts_dir),
                                      make_protocol(cfg.judge, None))["judge"]["qwen_vl"]

    assert fingerprint()["judge_max_new_tokens"] == 256
    assert fingerprint(judge_max_new_tokens=8)["judge_max_new_tokens"] == 8
