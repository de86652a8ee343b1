"""A leaderboard across finished runs: one table (Markdown, CSV, HTML) of every run's headline metrics with their
95% CIs, what was scored (editor, adapter, training step) and how (judge, protocol, judge prompts), and when; and
a side-by-side page of the runs' edits per sample. A sweep folder stands for its variants.

Only the written outputs are read (report.json, run.json, results.jsonl, sweep.json, through the readers that
check they belong together), nothing is judged again. Runs that do not measure the same thing are not put side by
side: the FIRST run given is the reference, and a run whose protocol, judge, judge prompts, scoring, dataset or
sample set differs from the reference's is left out, with one line naming it and the field that differs
(`other: protocol viescore ≠ default`).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import ConfigError
from .metrics import NO_VALUE, Metric
from .sweep import SWEEP_JSON, checkpoint_step

LEADERBOARD_MD, LEADERBOARD_CSV, LEADERBOARD_HTML = "leaderboard.md", "leaderboard.csv", "leaderboard.html"
SIDE_BY_SIDE_HTML = "side_by_side.html"
SHORT_HASH = 12


@dataclass
class Entry:
    """One run (or one sweep variant) as the leaderboard reads it."""

    label: str
    folder: Path
    run: dict[str, Any]  # bench_lib.compare.load_run
    sweep_step: Optional[int] = None

    @property
    def report(self) -> dict[str, Any]:
        return self.run["report"]

    @property
    def config(self) -> dict[str, Any]:
        return self.report["meta"].get("config") or {}


def load_entries(paths: list[Path]) -> list[Entry]:
    """The runs behind `paths`, in order: a run folder is one entry, a sweep folder one per variant (in the sweep's
    order). ConfigError, naming the folder, for one that is neither a finished run nor a finished sweep."""
    from .compare import Refusal, load_run
    from .sweep import read_sweep

    entries: list[Entry] = []
    for path in map(Path, paths):
        try:
            if (path / SWEEP_JSON).is_file():
                sweep = read_sweep(path)
                entries += [Entry(f"{path.name}/{row['name']}", path / row["folder"], load_run(path / row["folder"]),
                                  row.get("step")) for row in sweep["variants"]]
            else:
                entries.append(Entry(path.name, path, load_run(path)))
        except Refusal as err:
            raise ConfigError(f"{path}: {err}") from None
    labels = [e.label for e in entries]
    for entry in entries:  # the same folder name twice: tell them apart by their parent folder
        if labels.count(entry.label) > 1:
            entry.label = f"{entry.folder.parent.name}/{entry.folder.name}"
    return entries


# --- what a run is -------------------------------------------------------------------------------------------


def short_path(text: Optional[str]) -> Optional[str]:
    """A local path as its last two parts (`my-lora/checkpoint-500`): the table names, never locates."""
    if not text:
        return None
    path = Path(text)
    if not path.is_absolute():
        return text
    parts = path.parts[-3:-1] if path.name == "transformer" or path.suffix == ".safetensors" else path.parts[-2:]
    return "/".join(parts)


def adapter(entry: Entry) -> Optional[str]:
    config = entry.config
    return short_path(config.get("lora")) or short_path(config.get("editor_transformer"))


def editor(entry: Entry) -> str:
    config, meta = entry.config, entry.report["meta"]
    model = config.get("editor_model")
    return f"{meta.get('editor')} {short_path(model)}" if model else str(meta.get("editor"))


def step(entry: Entry) -> Optional[int]:
    """The training step: a sweep variant's (`checkpoint-500`), else the one the adapter's folder names."""
    if entry.sweep_step is not None:
        return entry.sweep_step
    for where in (entry.config.get("lora"), entry.config.get("editor_transformer")):
        for part in reversed(Path(where).parts if where else ()):
            if checkpoint_step(part) is not None:
                return checkpoint_step(part)
    return None


def judge(entry: Entry) -> str:
    meta = entry.report["meta"]
    mode = f" ({meta['judge_mode']})" if meta.get("judge_mode") else ""
    return f"{meta.get('judge_model') or meta.get('judge')}{mode}"


def protocol(entry: Entry) -> str:
    return (entry.report.get("protocol") or {}).get("name", "default")


def prompts_hash(entry: Entry) -> Optional[str]:
    """The judge prompts' sha256: the benchmark's prompt file's, where the run read one (provenance
    `judge_prompts.sha256`), else the protocol's own prompts' hash; None when the report has neither."""
    recorded = (entry.report.get("provenance") or {}).get("judge_prompts")
    if isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str):
        return recorded["sha256"]
    return (entry.report.get("protocol") or {}).get("prompts_sha256")


def sample_ids(entry: Entry) -> list[str]:
    return [row["id"] for row in entry.run["rows"]]


def date(entry: Entry) -> str:
    finished = entry.report["meta"].get("finished") or ""
    return finished[:16].replace("T", " ") + (" UTC" if finished.endswith("+00:00") else "") if finished else NO_VALUE


# --- what must agree -----------------------------------------------------------------------------------------


def _first_difference(a: Any, b: Any, section: str) -> str:
    from .compare import differences

    path, va, vb = differences(a, b, section)[0]
    return f"({path.removeprefix(section + '.')} {vb!r} ≠ {va!r})"


def _judge_settings(entry: Entry) -> dict[str, Any]:
    return {k: v for k, v in entry.run["fingerprint"].get("judge", {}).items() if k not in ("protocol",)}


def failure_policy(entry: Entry) -> str:
    """How unparsed answers counted (strict: in no mean; reference: as the benchmark counts them)."""
    return entry.config.get("failure_policy") or "strict"


def _scoring(entry: Entry) -> Any:
    meta = entry.report["meta"]
    return {"version": entry.run["fingerprint"].get("scoring"), "score_formula": meta.get("score_formula"),
            "score_weights": meta.get("score_weights")}


# (field, what must be equal, how the reason shows the excluded run's value against the reference's)
CHECKS: list[tuple[str, Callable[[Entry], Any], Callable[[Entry, Entry], str]]] = [
    ("protocol", protocol, lambda ref, e: f"{protocol(e)} ≠ {protocol(ref)}"),
    ("judge", _judge_settings,
     lambda ref, e: f"{judge(e)} ≠ {judge(ref)}" if judge(e) != judge(ref)
     else "settings " + _first_difference(_judge_settings(ref), _judge_settings(e), "judge")),
    ("judge prompts", lambda e: (prompts_hash(e), e.run["fingerprint"].get("rubrics")),
     lambda ref, e: (f"{(prompts_hash(e) or NO_VALUE)[:SHORT_HASH]} ≠ {(prompts_hash(ref) or NO_VALUE)[:SHORT_HASH]}"
                     if prompts_hash(e) != prompts_hash(ref) else "(rubric files differ)")),
    ("scoring", _scoring, lambda ref, e: _first_difference(_scoring(ref), _scoring(e), "scoring")),
    ("failure_policy", failure_policy, lambda ref, e: f"{failure_policy(e)} ≠ {failure_policy(ref)}"),
    ("dataset fingerprint", lambda e: e.run["fingerprint"].get("data"),
     lambda ref, e: _first_difference(ref.run["fingerprint"].get("data"), e.run["fingerprint"].get("data"), "data")),
    ("sample set", lambda e: sorted(sample_ids(e)),
     lambda ref, e: f"{len(set(sample_ids(e)) - set(sample_ids(ref)))} sample(s) the reference does not have, "
                    f"{len(set(sample_ids(ref)) - set(sample_ids(e)))} of the reference's missing"),
]


def not_comparable(reference: Entry, entry: Entry) -> Optional[str]:
    """Why `entry` can't stand beside `reference` (`name: field value ≠ reference's value`), or None."""
    for field, value, shown in CHECKS:
        if value(entry) != value(reference):
            return f"{entry.label}: {field} {shown(reference, entry)}"
    return None


# --- the table -----------------------------------------------------------------------------------------------


def run_metrics(entry: Entry) -> list[Metric]:
    """The run's protocol's metrics as it declares them (direction included), primary first; as the report
    recorded them where the protocol is not registered here."""
    from .registry import PROTOCOLS

    name = protocol(entry)
    recorded = (entry.report.get("protocol") or {}).get("metrics") or {}
    primary = (entry.report.get("protocol") or {}).get("primary") or "score"
    try:
        metrics = list(PROTOCOLS.get(name).metrics)
    except (KeyError, ConfigError):
        metrics = [Metric.recorded(m, d) for m, d in recorded.items()] or [Metric("score", 0, 10)]
    return sorted(metrics, key=lambda m: m.name != primary)


def scale(metric: Metric) -> str:
    low, high = metric.shown_range
    return f"{low:g}-{high:g}, {'higher' if metric.higher_is_better else 'lower'} is better"


def leaderboard(paths: list[Path]) -> dict[str, Any]:
    """The leaderboard of the runs behind `paths` (sweep folders expanded): the first is the reference; rows of
    the runs comparable with it, best primary-metric mean first; `excluded` the others, each with its reason."""
    entries = load_entries(paths)
    if not entries:
        raise ConfigError("no runs given")
    reference, kept, excluded = entries[0], [], []
    for entry in entries:
        reason = None if entry is reference else not_comparable(reference, entry)
        (excluded.append({"run": entry.label, "folder": str(entry.folder), "reason": reason}) if reason
         else kept.append(entry))
    metrics = run_metrics(reference)
    primary = metrics[0]
    rows = []
    for entry in kept:
        overall = entry.report["overall"]
        rows.append({
            "run": entry.label, "folder": str(entry.folder), "reference": entry is reference,
            "editor": editor(entry), "adapter": adapter(entry), "step": step(entry),
            "metrics": {m.name: (overall.get("metrics") or {}).get(m.name) for m in metrics},
            "scored": overall.get("count"), "failed": overall.get("failed"),
            "judge": judge(entry), "protocol": protocol(entry), "judge_prompts_sha256": prompts_hash(entry),
            "date": date(entry),
        })
    sign = 1 if primary.higher_is_better else -1

    def rank_key(row):
        mean = (row["metrics"][primary.name] or {}).get("mean")
        return (mean is None, -sign * mean if mean is not None else 0.0)

    rows.sort(key=rank_key)  # stable: ties keep the order given
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {"reference": reference.label, "protocol": protocol(reference), "primary": primary.name,
            "metrics": [{"name": m.name, "range": list(m.shown_range), "higher_is_better": m.higher_is_better}
                        for m in metrics],
            "rows": rows, "excluded": excluded,
            "note": "Means with 95% bootstrap CIs over each run's scored samples, on the scale each metric's "
                    "protocol reports. The first run given is the reference: runs whose protocol, judge, judge "
                    "prompts, scoring, failure policy, dataset or sample set differ from it are not ranked beside it."}


def _cells(board: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table as text cells, shared by the three formats (so they agree)."""
    metrics = [Metric(m["name"], *m["range"], higher_is_better=m["higher_is_better"]) for m in board["metrics"]]
    header = ["rank", "run", "editor", "adapter", "step",
              *(f"{m.name} ({scale(m)})" for m in metrics),
              "scored", "failed", "judge", "protocol", "judge prompts", "date"]
    body = []
    for row in board["rows"]:
        body.append([str(row["rank"]), row["run"] + (" (reference)" if row["reference"] else ""), row["editor"],
                     row["adapter"] or NO_VALUE, NO_VALUE if row["step"] is None else str(row["step"]),
                     *(m.format(row["metrics"][m.name]) for m in metrics),
                     str(row["scored"]), str(row["failed"]), row["judge"], row["protocol"],
                     (row["judge_prompts_sha256"] or NO_VALUE)[:SHORT_HASH], row["date"]])
    return header, body


def render_markdown(board: dict[str, Any]) -> str:
    from .report import md_cell

    header, body = _cells(board)
    lines = [f"# Leaderboard: {len(board['rows'])} runs", "", board["note"], "",
             "| " + " | ".join(md_cell(h) for h in header) + " |",
             "|" + "|".join("---:" if h in ("rank", "step", "scored", "failed") else "---" for h in header) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in body]
    if board["excluded"]:
        lines += ["", f"Not comparable with the reference ({md_cell(board['reference'])}), left out:", ""]
        lines += [f"- {md_cell(x['reason'])}" for x in board["excluded"]]
    return "\n".join(lines) + "\n"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> str:
    """A text cell a spreadsheet can't take for a formula: one starting with = + - @ tab or CR gets a leading
    single quote (OWASP's advice for CSV injection). Numbers are written by the caller as numbers."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def render_csv(board: dict[str, Any]) -> str:
    """The rows with every number at full precision (a CI as its two ends); the excluded runs are not rows. Text
    cells that a spreadsheet would read as a formula start with a single quote (`csv_text`)."""
    names = [m["name"] for m in board["metrics"]]
    out = io.StringIO()
    # RFC 4180's line ends: a cell holding a CR (or LF) is then quoted, so it can't end a row early
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["rank", "run", "reference", "editor", "adapter", "step",
                     *(f"{n}_{part}" for n in names for part in ("mean", "ci_low", "ci_high")),
                     "scored", "failed", "judge", "protocol", "judge_prompts_sha256", "date", "folder"])
    for row in board["rows"]:
        numbers = []
        for n in names:
            stats = row["metrics"][n] or {}
            ci = stats.get("ci95") or [None, None]
            numbers += ["" if v is None else repr(float(v)) for v in (stats.get("mean"), *ci)]
        text = [csv_text(row[key]) for key in ("run", "editor", "adapter", "judge", "protocol",
                                               "judge_prompts_sha256", "date", "folder")]
        writer.writerow([row["rank"], text[0], str(row["reference"]).lower(), text[1], text[2],
                         "" if row["step"] is None else row["step"], *numbers, row["scored"], row["failed"],
                         *text[3:]])
    return out.getvalue()


def render_html(board: dict[str, Any]) -> str:
    header, body = _cells(board)
    esc = html.escape
    numeric = {i for i, h in enumerate(header) if h in ("rank", "step", "scored", "failed") or "is better" in h}
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>"
                                    for i, c in enumerate(cells)) + "</tr>\n" for cells in body)
    excluded = ""
    if board["excluded"]:
        excluded = (f"<h2>Not comparable with the reference ({esc(board['reference'])}), left out</h2>\n<ul>"
                    + "".join(f"<li>{esc(x['reason'])}</li>" for x in board["excluded"]) + "</ul>\n")
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>Leaderboard: {len(board['rows'])} runs</title>\n<style>{TABLE_CSS}</style>\n</head>\n<body>\n"
            f"<h1>Leaderboard: {len(board['rows'])} runs</h1>\n<p>{esc(board['note'])}</p>\n"
            f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n{excluded}</body>\n</html>\n")


TABLE_CSS = ("body { font-family: system-ui, sans-serif; margin: 16px; color: #222; } "
             "table { border-collapse: collapse; font-size: 13px; } "
             "th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; } "
             "th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }")


def write_leaderboard(board: dict[str, Any], out: Path) -> dict[str, Path]:
    """leaderboard.md / .csv / .html (and leaderboard.json) in `out`."""
    from .store import write_json, write_text

    out = Path(out)
    paths = {"md": out / LEADERBOARD_MD, "csv": out / LEADERBOARD_CSV, "html": out / LEADERBOARD_HTML,
             "json": out / "leaderboard.json"}
    write_text(paths["md"], render_markdown(board))
    write_text(paths["csv"], render_csv(board))
    write_text(paths["html"], render_html(board))
    write_json(paths["json"], board)
    return paths


# --- side by side ----------------------------------------------------------------------------------------------


def _samples(entry: Entry) -> dict[str, Any]:
    """id -> Sample of the reference's dataset, as its run read it (for the source images); {} where the dataset
    can't be read here any more (the page then says "no image")."""
    import dataclasses
    import logging

    from .config import DataConfig
    from .data import load_benchmark

    config, meta = entry.config, entry.report["meta"]
    names = {f.name for f in dataclasses.fields(DataConfig)}
    values = {k: v for k, v in config.items() if k in names}
    values["dataset"] = meta.get("dataset_path") or config.get("dataset")
    try:
        samples, identity = load_benchmark(DataConfig(**values))
    except (ConfigError, OSError, TypeError, ValueError) as err:
        logging.getLogger(__name__).warning("side by side: the sources can't be shown (%s)", err)
        return {}
    expected = (entry.run["fingerprint"].get("data") or {}).get("dataset_content")
    if identity != expected:  # the same ids are not the same data: the sources would be other samples' images
        logging.getLogger(__name__).warning("side by side: the sources can't be shown (the data at %s is not the "
                                            "reference run's: its content is %s, the run's was %s)",
                                            values["dataset"], identity, expected)
        return {}
    return {s.id: s for s in samples}


def check_side_by_side(board: dict[str, Any], *, limit: Optional[int] = None) -> None:
    """ConfigError unless the board can have a side-by-side page: two or more comparable runs, a limit >= 0."""
    if len(board["rows"]) < 2:
        raise ConfigError("a side-by-side page needs two or more comparable runs")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"the side-by-side page's sample limit must be an integer >= 0, got {limit!r}")


def side_by_side(board: dict[str, Any], *, limit: Optional[int] = None) -> str:
    """An HTML page with one row per sample of the leaderboard's runs (the reference's order): the source, each
    run's edit with its scores (on each metric's scale), and the sanity baselines' scores (the reference run's:
    the runs are comparable, so judged alike). Self-contained (thumbnails as data URIs); every text escaped."""
    from .gallery import _thumb
    from .store import load_png, read_run

    check_side_by_side(board, limit=limit)
    entries = {str(e.folder): e for e in load_entries([Path(row["folder"]) for row in board["rows"]])}
    runs = [(row, entries[row["folder"]]) for row in sorted(board["rows"], key=lambda r: not r["reference"])]
    if len(runs) < 2:
        raise ConfigError("a side-by-side page needs two or more comparable runs")
    reference = runs[0][1]
    metrics = run_metrics(reference)
    samples = _samples(reference)
    rows_of = [{r["id"]: r for r in entry.run["rows"]} for _, entry in runs]
    baselines = read_run(reference.folder).get("baselines") or {}
    esc = html.escape

    def numbers(result: Optional[dict[str, Any]]) -> str:
        if not result or result.get("status") != "ok":
            return f"<div class=err>{esc((result or {}).get('status') or 'no result')}</div>"
        values = result.get("metrics") or {metrics[0].name: result.get("score")}
        parts = []
        for m in metrics:
            value = m.shown(values.get(m.name))
            if value is not None:
                low, high = m.shown_range
                parts.append(f"<span class=metric>{esc(m.name)} <b>{value:.2f}</b> <small>({low:g}-{high:g})</small>"
                             "</span>")
        return "<div>" + "<br>".join(parts) + "</div>"

    def figure(uri: Optional[str], caption: str, scores: str = "") -> str:
        image = f"<img src=\"{uri}\" alt=\"{esc(caption)}\">" if uri else "<div class=missing>no image</div>"
        return f"<td><figure>{image}<figcaption>{esc(caption)}</figcaption>{scores}</figure></td>"

    head = "<th>sample</th><th>source</th>" + "".join(f"<th>{esc(row['run'])}</th>" for row, _ in runs)
    head += "".join(f"<th>baseline: {esc(name)}</th>" for name in baselines)
    ids = [r["id"] for r in reference.run["rows"]][:limit]
    body = []
    for sample_id in ids:
        first = rows_of[0][sample_id]
        sample = samples.get(sample_id)
        text = (f"<td class=text><b>{esc(sample_id)}</b> <small>{esc(first.get('category') or '')}</small>"
                f"<p>{esc(first.get('instruction') or '')}</p></td>")
        source = _thumb(sample.source_image.load) if sample is not None and sample.source_image and \
            not sample.problem else None
        cells = [text, figure(source, "source")]
        for (row, entry), results in zip(runs, rows_of):
            result = results.get(sample_id)
            uri = (_thumb(lambda entry=entry, result=result: load_png(entry.folder / result["edited_image"]))
                   if result and result.get("edited_image") else None)
            cells.append(figure(uri, row["run"], numbers(result)))
        for brows in baselines.values():
            result = next((b for b in brows if b["id"] == sample_id), None)
            cells.append(f"<td class=baseline>{numbers(result)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    title = f"Side by side: {len(runs)} runs, {len(ids)} samples"
    note = (f"Protocol {board['protocol']}; each score with its scale. The sanity baselines (the source unchanged, "
            "a blank image) are judged like an edit: an edit should beat them.")
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>\n"
            f"<style>{TABLE_CSS} {SIDE_CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>\n<p>{esc(note)}</p>\n"
            f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody>\n</table>\n</body>\n</html>\n")


SIDE_CSS = ("figure { margin: 0; width: 180px; font-size: 12px; } "
            "figure img, .missing { width: 180px; height: 180px; object-fit: contain; display: block; } "
            ".missing { background: #eee; line-height: 180px; text-align: center; color: #777; } "
            "td.text { width: 240px; } td.text p { overflow-wrap: anywhere; } .err { color: #c62828; } "
            "td.baseline { color: #555; }")


def write_side_by_side(board: dict[str, Any], out: Path, *, limit: Optional[int] = None) -> Path:
    from .store import write_text

    path = Path(out) / SIDE_BY_SIDE_HTML
    write_text(path, side_by_side(board, limit=limit))
    return path
