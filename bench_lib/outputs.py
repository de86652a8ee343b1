"""The reporting pass (main process): one run folder's rows, report.json, report.md, the chart and the gallery.

Every output of a pass carries one stamp (see `bench_lib.store.read_run`): results first, run.json last, so a
kill in between leaves a folder that readers refuse rather than files from two passes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from .data import Sample
from .edit_stage import is_fatal
from .gallery import GALLERY_FILE, write_gallery
from .judges import Rubrics
from .protocols import Protocol
from .protocols.base import SampleFacts
from .provenance import collect as collect_provenance
from .report import CHART_FILE, build_report, judge_usage, render_markdown, timing_summary, write_chart
from .results import FILLS, LEFT_OUT, ON_SOURCE, baseline_edit, build_row, conform, results_features, results_schema
from .scoring import FORMULA_TEXT
from .store import (
    BASELINES_DIR,
    JUDGE_INPUTS_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RunFolder,
    jsonl_text,
    sha256_text,
    write_json,
    write_text,
)

logger = logging.getLogger(__name__)


def rank_timings(edit, judge, free_editor: float) -> dict[str, float]:
    """One rank's stage times in the report's terms (from the edit and judge stages' own timings; `edit` may be
    one sweep variant's share of the edit stage), and its peak device memory (bytes) in each stage."""
    return {"load_editor": edit.load_editor, "edit": edit.edit, "barrier_wait": edit.barrier_wait,
            "adapter_swap": edit.swap, "edited": edit.edited, "switch": free_editor + judge.load_judge,
            "judge": judge.judge, "judged": judge.judged, "editor_loads": edit.loads, "adapter_swaps": edit.swaps,
            "judge_loads": judge.loads, **{f"judge_{name}": value for name, value in judge.usage.items()},
            **{f"{name}_{peak}": getattr(stage, peak) for name, stage in (("edit", edit), ("judge", judge))
               for peak in ("max_memory_allocated", "max_memory_reserved")}}


def edits_digest(records: list[dict]) -> Optional[dict]:
    """One digest over edits that came from files (precomputed: each record's edit_sha256), for provenance."""
    pairs = sorted((r["id"], r["edit_sha256"]) for r in records if r.get("edit_sha256"))
    if not pairs:
        return None
    text = "".join(f"{i}\0{h}\n" for i, h in pairs)
    return {"count": len(pairs), "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}


def build_rows(samples: list[Sample], edits: dict[str, dict], judgements: dict[str, dict],
               baseline_records: dict[str, dict[str, dict]], protocol: Protocol, facts: dict[str, SampleFacts], *,
               failure_policy: str = "strict"):
    """The editor's rows and each baseline's, in dataset order (`facts`: each sample's, by id)."""
    rows = [build_row(s, edit=edits[s.id], judgement=judgements.get(s.id), protocol=protocol, facts=facts[s.id],
                      failure_policy=failure_policy) for s in samples]
    baselines = {name: [build_row(s, edit=baseline_edit(s), judgement=records.get(s.id), protocol=protocol,
                                  facts=facts[s.id], failure_policy=failure_policy) for s in samples]
                 for name, records in baseline_records.items()}
    schema = schema_of(rows, protocol)
    return [conform(r, schema) for r in rows], {name: [conform(r, schema) for r in brows]
                                                for name, brows in baselines.items()}


def schema_of(rows: list[dict], protocol: Protocol) -> dict[str, Any]:
    """The results schema of a run: the protocol's, with the extra fields its dataset's format gives."""
    return results_schema(protocol, sorted({key for r in rows for key in (r.get("extras") or {})}),
                          fills=any("fills" in r for r in rows))


def judge_input_lines(samples: list[Sample], judge_records: dict[str, dict]) -> list[dict[str, Any]]:
    """judge_inputs.jsonl: per judged sample (dataset order) and view, what the judge was sent (see
    bench_lib.judge_stage.judge_inputs), with the digest of each text so results can name them."""
    lines = []
    for sample in samples:
        record = judge_records.get(sample.id) or {}
        for view in record.get("inputs") or []:
            lines.append({"id": sample.id, "attempt": record.get("attempt"), **view})
    return lines


def write_outputs(cfg, folder: RunFolder, *, rows: list[dict], baseline_rows: dict[str, list[dict]],
                  per_rank: list[dict], samples: list[Sample], rubrics: Rubrics, protocol: Protocol,
                  meta: dict[str, Any], edit_records: list[dict],
                  judge_records: Optional[dict[str, dict]] = None) -> dict[str, Any]:
    """Write one reporting pass into `folder`; returns the report."""
    output_dir = folder.root
    meta = {**meta, "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "protocol": protocol.name, "primary_metric": protocol.primary.name,
            "score_formula": cfg.judge.score_formula, "score_formula_text": FORMULA_TEXT[cfg.judge.score_formula],
            "score_weights": cfg.judge.score_weights if cfg.judge.score_formula == "mean" else None,
            "num_samples": len(rows), "config": cfg.to_dict()}
    history = folder.history()
    provenance = collect_provenance(rubric_hashes=rubrics.hashes(), devices=[r["device"] for r in per_rank],
                                    models=history[-1]["models"], seed=cfg.run.seed)  # as resolved at the start
    provenance.update(started=meta["started"], finished=meta["finished"], fingerprint=folder.fingerprint(),
                      attempts=history, edits=edits_digest(edit_records), judge_prompts=judge_prompts_provenance(
                          cfg, protocol))
    timings = {**timing_summary([r["timings"] for r in per_rank]), "attempt": meta["attempt"]}
    worked = did_work(meta["attempt"], rows, baseline_rows)
    if not worked:  # a resume with nothing to do: the timings of the last attempt that did the work
        timings = folder.worked_timings() or timings
    report = build_report(rows, timings=timings, meta=meta, baselines=baseline_rows, provenance=provenance,
                          protocol=protocol)
    report["judge_usage"] = judge_usage(rows, baseline_rows, timings["per_rank"],
                                        getattr(cfg.judge_backend, "judge_price_per_mtok", None))
    report["comparable"] = comparability(cfg, protocol)
    report["failure_counts"] = failure_counts(rows)
    results_text = jsonl_text(rows)
    baseline_texts = {name: jsonl_text(brows) for name, brows in baseline_rows.items()}
    report["results_features"] = results_features(schema_of(rows, protocol)).to_dict()  # datasets.Features
    report["stamp"] = {"attempt": meta["attempt"], "results_sha256": sha256_text(results_text),
                       "baselines_sha256": {name: sha256_text(text) for name, text in baseline_texts.items()}}
    write_text(output_dir / RESULTS_FILE, results_text)
    if judge_records is not None:
        write_text(output_dir / JUDGE_INPUTS_FILE, jsonl_text(judge_input_lines(samples, judge_records)))
    for name, text in baseline_texts.items():
        write_text(output_dir / BASELINES_DIR / f"{name}.jsonl", text, root=output_dir)
    for stale in (output_dir / BASELINES_DIR).glob("*.jsonl"):  # baselines an earlier attempt asked for
        if stale.stem not in baseline_rows:
            stale.unlink()
    write_json(output_dir / REPORT_FILE, report)
    chart = optional_output(output_dir / CHART_FILE,
                            lambda: write_chart(output_dir / CHART_FILE, report, protocol.primary))
    write_text(output_dir / "report.md", render_markdown(report, chart=CHART_FILE if chart else None,
                                                         protocol=protocol))
    if cfg.run.gallery:
        optional_output(output_dir / GALLERY_FILE,
                        lambda: write_gallery(output_dir / GALLERY_FILE, rows, samples, report,
                                              baselines=baseline_rows))
    else:
        (output_dir / GALLERY_FILE).unlink(missing_ok=True)  # an earlier attempt's would look current
    folder.record_outputs(report["stamp"], timings=timings if worked else None)
    return report


# The reference setting of each benchmark a protocol implements: its judge and its failure rules.
# (benchmark, its judge model, the backend it runs through or None: any serving the same model)
REFERENCE_JUDGES = {"re_edit": ("RE-Edit", "Qwen/Qwen3-VL-30B-A3B-Instruct", "vllm"),
                    "risebench": ("RISEBench", "gpt-4.1-2025-04-14", None), "kris": ("KRIS-Bench", "gpt-4o", None),
                    "viescore": ("GEdit-Bench (VIEScore)", "gpt-4.1", None)}


def comparability(cfg, protocol: Protocol) -> dict[str, Any]:
    """Whether the headline can stand next to the benchmark's published table: only with its verbatim prompts,
    its judge (generating its answers), its image sizes and its failure rules; else what differs."""
    if protocol.name not in REFERENCE_JUDGES:
        return {"benchmark": None, "comparable": False, "differs": ["this project's own protocol"]}
    benchmark, judge, backend = REFERENCE_JUDGES[protocol.name]
    differs = []
    if protocol.verbatim is None:
        differs.append("paraphrased prompts")
    from .registry import JUDGES

    used = JUDGES.get(cfg.judge.judge).display_name(cfg.judge_backend)
    if used != judge:
        differs.append(f"judge {used} (the benchmark's: {judge})")
    elif backend is not None and cfg.judge.judge != backend:
        differs.append(f"judge backend {cfg.judge.judge} (the benchmark runs {judge} through {backend}, whose "
                       "scores differ for the same model)")
    if cfg.judge.judge_mode != "generate":
        read_after = ("the answer format's text up to the score (supplied, or generated where free text comes "
                      "first)" if protocol.verbatim is not None else "this project's question")
        differs.append(f"logits mode (the benchmark's judge writes its answers; here each score is the expected value "
                       f"over the scale's tokens read after {read_after})")
    if protocol.max_pixels(cfg.judge) is not None:
        differs.append(f"images at most {protocol.max_pixels(cfg.judge)} pixels (the benchmark's: "
                       f"{protocol.image_rule})")
    if cfg.judge.failure_policy != "reference":
        differs.append("failure_policy strict (the benchmark counts unparsed answers its own way)")
    return {"benchmark": benchmark, "comparable": not differs, "differs": differs}


def failure_counts(rows: list[dict]) -> dict[str, int]:
    """Beside the headline, whatever the policy: judgements that did not parse, and the values the failure policy
    filled in, guessed, dropped or counted as zero."""
    out = {"unparsed_judgements": sum(r.get("judge_parse") == "failed" for r in rows)}
    for name in FILLS:
        out[name] = sum((r.get("fills") or {}).get(name) or 0 for r in rows)
    # failure_policy reference: missing edits its benchmark scores on the source image (RE-Edit); records its
    # benchmark's own loader does not read (left out of every mean)
    out["edits_scored_on_source"] = sum(ON_SOURCE in (r.get("flags") or []) for r in rows)
    out["records_left_out"] = sum(LEFT_OUT in (r.get("flags") or []) for r in rows)
    return out


def judge_prompts_provenance(cfg, protocol: Protocol) -> dict[str, Any]:
    """Where the judge's prompts came from: the benchmark's own file (its source, the file read, its sha256, the
    texts taken) or this project's wording; the failure policy; the image sizes the judge was sent."""
    file = protocol.prompt_file
    return {"source": file.source if file else None, "path": file.path if file else None,
            "sha256": file.sha256 if file else None, "texts": sorted(protocol.verbatim) if protocol.verbatim else None,
            "wording": "verbatim" if file else "paraphrase", "failure_policy": cfg.judge.failure_policy,
            "images": protocol.image_rule_text(cfg.judge)}


def did_work(attempt: int, rows: list[dict], baseline_rows: dict[str, list[dict]]) -> bool:
    """Whether this attempt edited or judged any sample (the editor's or a baseline's); re-recording a sample's
    invalid input is no work."""
    return any(row["status"] != "invalid_input" and attempt in (row.get("attempts") or {}).values()
               for row in [*rows, *(row for brows in baseline_rows.values() for row in brows)])


def optional_output(path: Path, write: Callable[[], Any]) -> Any:
    """The chart and the gallery are views of results already written: if one fails for its own reasons (a
    plotting library that fails, memory), say so loudly, remove the earlier attempt's file (it would look
    current) and finish the run rather than stop rank 0 before the final barrier. A full or read-only disk
    is no such reason: it stops the run (exit code 1)."""
    try:
        return write()
    except Exception as err:
        if is_fatal(err):
            raise
        logger.error("could not write %s (results.jsonl and report.json are complete):\n%s", path.name,
                     traceback.format_exc())
    path.unlink(missing_ok=True)
    return None
