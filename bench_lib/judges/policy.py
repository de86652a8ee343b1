"""The parse and re-ask policy, the same for every judge backend: a backend only generates text or reads scales
(bench_lib.backends.Judge); this module asks it, reads the answers, asks once more where an answer was off-format,
and assembles each sample's `Judgement` from its views.

- The requests of a batch are grouped by `batch_key` (a protocol's view with its questions), in the order they
  first appear; each group is asked together.
- generate: one batched generation per group with the answer format's instruction; the answers that do not
  parse are asked once more, together, with the strict instruction; an answer that fails twice makes the sample
  `judge_failed` (parse "failed"), its raw answers kept in order.
- logits: per question of a group, the reading of every request; the rows whose probability on the scale's
  answers is below the backend's `min_scale_mass` (or zero) are off-format and asked once more with the strict
  question; what the judge wanted to say instead is kept as raw; off-format twice is `judge_failed`. A reading
  that is not finite (NaN/inf logits) fails the sample without being a format problem (parse None).
- logits along a reply layout (a benchmark's verbatim answer format, `AnswerFormat.reply_layout`): the reply is
  built segment by segment for every request of the group: supplied text is appended, free text is generated
  (greedy) up to the score's marker, and at each score every request's reading is taken after its own reply so
  far; the reply then continues with the answer of highest probability. The reply each answer was read after is
  kept (`Judgement.reply_prefixes`). No strict form exists to ask again with: off the scale is `judge_failed`.
- A view with a question that failed (off-format, in either logits path) counts as one answer that did not
  parse, as in generate mode: the sample is judge_failed, and the answers of its other views are still read
  and kept as its partial answers (failure_policy reference counts them).
- A sample's rationale is its view's (several views: each labelled "[view] ..."); `digit_mass` is logits mode's
  only. Nothing unreadable is ever scored 0 or guessed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from ..judging import (
    AnswerFormatError,
    Judgement,
    JudgeRequest,
    Reading,
    ScalePrompt,
    Slot,
    Supplied,
    Written,
    written_answer,
)

if TYPE_CHECKING:
    from ..backends import Judge

MODES = ("logits", "generate")
MIN_MASS_OPTION = "judge_min_digit_mass"  # the option a backend's logits-mode threshold is set with


def judge(backend: Judge, samples: Sequence[Sequence[JudgeRequest]], *, mode: str) -> list[Judgement]:
    """One judgement per sample; `samples[i]`: the requests (views) of sample i, in the protocol's order."""
    if mode not in MODES:
        raise ValueError(f"judge mode {mode!r} is not one of {MODES}")
    judgements = [Judgement(answers={}, distributions={}, digit_mass={}) for _ in samples]
    groups: OrderedDict = OrderedDict()
    for i, requests in enumerate(samples):
        for request in requests:
            groups.setdefault(request.batch_key(), []).append((i, request))
    rationales: list[list[tuple[str, str]]] = [[] for _ in samples]
    for members in groups.values():
        if mode == "generate":
            _generate_group(backend, members, judgements, rationales)
        else:
            _logits_group(backend, members, judgements)
    for judgement, parts in zip(judgements, rationales):
        if parts:  # one view: its rationale as written; several: each labelled with its view
            judgement.rationale = parts[0][1] if len(parts) == 1 else " ".join(f"[{v}] {r}" for v, r in parts)
        if mode == "generate":
            judgement.digit_mass = None
        if judgement.error is not None:
            judgement.partial_answers = dict(judgement.answers or {})  # failure_policy reference counts them
            judgement.partial_distributions = dict(judgement.distributions or {})  # with what their metrics read
            judgement.answers = judgement.distributions = None
    return judgements


# --- generate mode -------------------------------------------------------------------------------------------


def _generate_group(backend: Judge, members: list[tuple[int, JudgeRequest]], judgements: list[Judgement],
                    rationales: list[list[tuple[str, str]]]) -> None:
    requests = [request for _, request in members]
    questions, answer_format = requests[0].questions, requests[0].answer_format
    texts = _generate(backend, [r.prompt(answer_format.instruction(questions)) for r in requests],
                      [judgements[i] for i, _ in members])
    retry = [k for k, text in enumerate(texts) if not _accept_text(members[k], text, judgements, rationales)]
    if retry:  # one batched re-ask of the answers that did not parse
        texts = _generate(backend, [requests[k].prompt(answer_format.instruction(questions, strict=True))
                                    for k in retry], [judgements[members[k][0]] for k in retry])
        for k, text in zip(retry, texts):
            i = members[k][0]
            if _accept_text(members[k], text, judgements, rationales, final=True) and judgements[i].parse == "ok":
                judgements[i].parse = "reasked"


def _generate(backend: Judge, prompts: list, owners: list[Judgement]) -> list[str]:
    completions = backend.generate(prompts)
    if len(completions) != len(prompts):  # a backend bug: never pair answers with the wrong samples
        raise RuntimeError(f"the judge backend returned {len(completions)} completions for {len(prompts)} prompts")
    for judgement, completion in zip(owners, completions):
        count_tokens(judgement, completion.prompt_tokens, completion.completion_tokens)
    return [completion.text for completion in completions]


def count_tokens(judgement: Judgement, prompt: Optional[int], completion: Optional[int]) -> None:
    """Add one request's token counts to its sample's (where the backend knows them: a judge server's usage)."""
    if prompt is None and completion is None:
        return
    tokens = judgement.tokens or {"prompt": None, "completion": None}  # None: not known (an in-process judge's)
    for name, count in (("prompt", prompt), ("completion", completion)):
        if count is not None:
            tokens[name] = (tokens[name] or 0) + count
    judgement.tokens = tokens


def _accept_text(member: tuple[int, JudgeRequest], text: str, judgements: list[Judgement],
                 rationales: list[list[tuple[str, str]]], *, final: bool = False) -> bool:
    i, request = member
    judgement = judgements[i]
    try:
        answers, rationale = request.answer_format.parse(text, request.questions)
    except AnswerFormatError as err:
        judgement.raw.append(text)
        if final and judgement.error is None:
            judgement.parse = "failed"
            judgement.error = f"the judge's answer did not parse twice: {err}"
        return False
    for q in request.questions:
        judgement.answers[q.name] = answers[q.name]
        judgement.distributions[q.name] = [1.0 if v == answers[q.name] else 0.0 for v in q.scale.values]
    if rationale:
        rationales[i].append((request.view, rationale))
    return True


# --- logits mode ---------------------------------------------------------------------------------------------


def _logits_group(backend: Judge, members: list[tuple[int, JudgeRequest]], judgements: list[Judgement]) -> None:
    requests = [request for _, request in members]
    questions, answer_format = requests[0].questions, requests[0].answer_format
    layout = answer_format.reply_layout(questions)
    if layout is not None:
        _layout_group(backend, members, judgements, layout)
        return
    min_mass = backend.min_scale_mass
    every = list(range(len(members)))
    failed: set[int] = set()  # rows with a question that failed
    with backend.read_scales(requests) as reader:
        for q in questions:
            readings = _read(reader, answer_format.scale_prompt(q), every)
            for k in every:
                count_tokens(judgements[members[k][0]], readings[k].prompt_tokens, readings[k].completion_tokens)
            off = [k for k in every if off_format(readings[k].mass, min_mass)]
            if off:  # one re-ask of the off-format rows, with the strict question
                for k in off:
                    judgements[members[k][0]].raw.append(f"{q.name}: {readings[k].instead()}")
                again = _read(reader, answer_format.scale_prompt(q, strict=True), off)
                for k in off:
                    readings[k] = again[k]
                    count_tokens(judgements[members[k][0]], again[k].prompt_tokens, again[k].completion_tokens)
                    if off_format(again[k].mass, min_mass):
                        judgements[members[k][0]].raw.append(f"{q.name} (re-asked): {again[k].instead()}")
            for k, (i, _) in enumerate(members):
                judgement = judgements[i]
                if k in off and judgement.parse == "ok":
                    judgement.parse = "reasked"
                if not _accept_reading(judgement, q.name, readings[k], min_mass):
                    failed.add(k)
    _drop_failed_views(members, judgements, failed)


def _drop_failed_views(members: list[tuple[int, JudgeRequest]], judgements: list[Judgement], failed: set[int]) -> None:
    """A view with a question that failed counts as a whole answer that did not parse (as in generate mode): none
    of its values is kept for failure_policy reference; the sample's other views keep theirs."""
    for k in failed:
        i, request = members[k]
        for q in request.questions:
            judgements[i].answers.pop(q.name, None)
            judgements[i].distributions.pop(q.name, None)


def _layout_group(backend: Judge, members: list[tuple[int, JudgeRequest]], judgements: list[Judgement],
                  layout: tuple) -> None:
    """Logits mode along a reply layout (the module docstring): the group's replies grow together, segment by
    segment; every request is read at every score."""
    requests = [request for _, request in members]
    questions = {q.name: q for q in requests[0].questions}
    owners = [judgements[i] for i, _ in members]
    every = list(range(len(members)))
    replies = [""] * len(members)
    min_mass = backend.min_scale_mass
    failed: set[int] = set()  # rows whose reply had a value off the scale
    with backend.read_scales(requests) as reader:
        for segment in layout:
            if isinstance(segment, Supplied):
                replies = [reply + segment.text for reply in replies]
            elif isinstance(segment, Written):
                texts = _generate(backend, [r.prompt("", reply) for r, reply in zip(requests, replies)], owners)
                replies = [reply + segment.through(text) for reply, text in zip(replies, texts)]
            elif isinstance(segment, Slot):
                q = questions[segment.question]
                readings = _read(reader, ScalePrompt("", q.scale, replies=tuple(replies)), every)
                for k, judgement in enumerate(owners):
                    reading = readings[k]
                    count_tokens(judgement, reading.prompt_tokens, reading.completion_tokens)
                    judgement.reply_prefixes = {**(judgement.reply_prefixes or {}), q.name: replies[k]}
                    if off_format(reading.mass, min_mass) and math.isfinite(reading.mass):
                        judgement.raw.append(f"{q.name}: {reading.instead()}")
                    if not _accept_reading(judgement, q.name, reading, min_mass, asked="(after the reply supplied)"):
                        failed.add(k)
                    replies[k] += written_answer(q.scale, reading.distribution)
            else:
                raise TypeError(f"unknown reply layout segment {segment!r}")
    _drop_failed_views(members, judgements, failed)


def _read(reader, prompt, rows: list[int]) -> list[Reading]:
    readings = list(reader.read(prompt, rows))
    missing = [k for k in rows if k >= len(readings) or not isinstance(readings[k], Reading)]
    if missing:  # a backend bug: every requested row needs its reading
        raise RuntimeError(f"the judge backend gave no reading for rows {missing} of {len(rows)}")
    return readings


def off_format(mass: float, min_mass: float) -> bool:
    """Below the threshold, or no probability on the scale's answers at all (whatever the threshold); NaN too
    (asked again; if it stays NaN the sample fails as not finite, not as off-format)."""
    return not (mass >= min_mass and mass > 0.0)


def _accept_reading(judgement: Judgement, name: str, reading: Reading, min_mass: float, *,
                    asked: str = "twice") -> bool:
    """Take one reading into the sample's judgement; False when it fails the sample. A reading on the scale is taken
    even after another view failed: as in generate mode, where each view parses on its own, failure_policy
    reference counts the answers of the views that were read whole (`Judgement.partial_answers`,
    `_drop_failed_views`). Non-finite logits make the judgement no parse failure, whichever question came first."""
    value, mass = reading.value, reading.mass
    judgement.digit_mass[name] = mass if math.isfinite(mass) else None
    if not (math.isfinite(value) and math.isfinite(mass)):
        judgement.error = judgement.error or "the judge's logits are not finite (NaN/inf)"
        judgement.parse = None  # not a format problem: the report counts it under judge_failed only
        return False
    if off_format(mass, min_mass):
        if judgement.error is None:
            judgement.parse = "failed"
            judgement.error = (f"the judge answered off-format {asked}: P(answer on the scale) for {name} "
                               f"{float(f'{mass:.4g}')} < {MIN_MASS_OPTION} {min_mass}")
        return False
    judgement.answers[name] = value
    judgement.distributions[name] = reading.distribution
    return True
