"""gallery.html: one self-contained page per run to look at the edits (no network, no CDN, no files beside it).

Per sample: source, edited and reference thumbnails (JPEG data URIs; an empty slot where a sample has no
reference, so the text column lines up), instruction, category, status, every score with its scale beside it,
the sanity baselines' scores of the same sample, rationale and error, with a link to the full-size edit in
`edits/`. The header names the editor and dataset by their short names; the output stamp that ties the page to
results.jsonl is in a `<meta>` element, not shown. Filter by category and status, sort by
score. The filters live in the URL's hash (`gallery.html#category=physics&status=ok&sort=score-desc`), so a
view can be bookmarked or shared, and a headless browser can load one.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from .data import Sample
from .metrics import Metric
from .store import load_png, write_text

GALLERY_FILE = "gallery.html"
THUMBNAIL_SIDE = 256


def thumbnail_uri(image: Image.Image, side: int = THUMBNAIL_SIDE) -> str:
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumb(load) -> Optional[str]:
    try:
        return thumbnail_uri(load())
    except Exception:  # the row's status and error already say what is wrong with this image
        return None


def gallery_items(output_dir: Path, rows: list[dict[str, Any]], samples: list[Sample],
                  primary: Optional[str] = None, *, metrics: Optional[dict[str, Metric]] = None,
                  baselines: Optional[dict[str, list[dict[str, Any]]]] = None) -> list[dict[str, Any]]:
    """One card's data per row; `metrics` are the protocol's per-sample metrics other than the primary one
    (which is `score`), and `baselines` each sanity baseline's score of the sample; every value on the scale the
    report shows (`metrics`: the report's declarations)."""
    by_id = {s.id: s for s in samples}
    metrics = metrics or {}

    def shown(name: str, value: Optional[float]) -> Optional[float]:
        return metrics[name].shown(value) if name in metrics else value

    baseline_scores = {name: {r["id"]: shown(primary, r.get("score")) for r in brows}
                       for name, brows in (baselines or {}).items()}
    items = []
    for position, row in enumerate(rows):
        sample = by_id[row["id"]]
        items.append({
            "position": position,
            "id": row["id"],
            "category": row["category"],
            "instruction": row["instruction"],
            "status": row["status"],
            "score": shown(primary, row["score"]),
            "metrics": {k: shown(k, v) for k, v in (row.get("metrics") or {}).items()
                        if k != primary and v is not None},
            "baselines": {name: scores.get(row["id"]) for name, scores in baseline_scores.items()},
            "rationale": row.get("rationale"),
            "error": row.get("error"),
            "flags": row.get("flags") or [],
            "reference_text": sample.reference_text,
            "edit_link": row["edited_image"],
            "source": _thumb(sample.source_image.load) if sample.source_image and not sample.problem else None,
            # a sample with several source images: the others, in order (the card shows every one)
            "more_sources": [_thumb(ref.load) if not sample.problem else None for ref in sample.sources[1:]],
            "edited": (_thumb(lambda row=row: load_png(output_dir / row["edited_image"]))
                       if row["edited_image"] else None),
            "reference": _thumb(sample.reference_image.load) if sample.reference_image else None,
        })
    return items


def short_name(text: Any) -> str:
    """A local path as its last two parts (a header names things, it does not say where they lie)."""
    text = str(text)
    path = Path(text)
    return "/".join(path.parts[-2:]) if path.is_absolute() else text


def recorded_metrics(report: dict[str, Any]) -> dict[str, Metric]:
    """The report's metrics as it declares them (range and shown scale)."""
    return {name: Metric.recorded(name, d) for name, d in ((report.get("protocol") or {}).get("metrics") or {}).items()}


def render_gallery(items: list[dict[str, Any]], report: dict[str, Any]) -> str:
    meta = report["meta"]
    config = meta.get("config") or {}
    editor = short_name(config.get("editor_model") or meta.get("editor_model") or meta.get("editor"))
    adapter = config.get("lora") or config.get("editor_transformer")
    if adapter:
        editor += f" + {short_name(adapter)}"
    title = f"{editor} on {short_name(meta['dataset'])}"
    primary = (report.get("protocol") or {}).get("primary") or "score"
    metrics = recorded_metrics(report)
    scale = {name: list(m.shown_range) for name, m in metrics.items()}
    overall = report["overall"]["mean"]
    shown = metrics[primary].shown(overall) if primary in metrics else overall
    low_high = f" ({scale[primary][0]:g}-{scale[primary][1]:g})" if primary in scale else ""
    scoring = (f"score {meta['score_formula']}" if meta.get("protocol", "default") == "default"
               else f"protocol {meta['protocol']}, score = {meta.get('primary_metric')}")
    summary = (f"{len(items)} samples · judge {short_name(meta['judge_model'])} ({meta['judge_mode']}) · {scoring} · "
               "overall mean " + ("–" if shown is None else f"{shown:.2f}{low_high}"))
    stamp = ""
    if report.get("stamp"):  # ties the page to the results.jsonl it shows (checked by store.read_run)
        from .store import stamp_line

        stamp = stamp_line(report["stamp"])
    # "<" escaped so no text in the data can close the script element
    data = {"items": items, "scale": scale, "primary": primary}
    values = {"title": html.escape(title), "summary": html.escape(summary), "stamp": html.escape(stamp),
              "data": json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")}
    # one pass: a value that happens to contain "{{data}}" is never substituted again
    return re.sub(r"\{\{(title|summary|stamp|data)\}\}", lambda m: values[m.group(1)], PAGE)


def write_gallery(path: Path, rows: list[dict[str, Any]], samples: list[Sample], report: dict[str, Any], *,
                  baselines: Optional[dict[str, list[dict[str, Any]]]] = None) -> None:
    primary = (report.get("protocol") or {}).get("primary")
    items = gallery_items(path.parent, rows, samples, primary, metrics=recorded_metrics(report), baselines=baselines)
    write_text(path, render_gallery(items, report))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<meta name="edit-bench-stamp" content="{{stamp}}">
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f5f5f5; color: #222; }
header { position: sticky; top: 0; background: #fff; padding: 10px 16px; border-bottom: 1px solid #ddd; z-index: 1; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
.summary { font-size: 13px; color: #555; margin-bottom: 8px; }
label { font-size: 13px; margin-right: 12px; }
#cards { display: flex; flex-direction: column; gap: 10px; padding: 12px 16px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; display: flex; gap: 12px; }
.images { display: grid; grid-template-columns: repeat(3, 180px); gap: 6px; flex: none; }
figure { margin: 0; width: 180px; text-align: center; font-size: 11px; color: #666; }
figure img { width: 180px; height: 180px; object-fit: contain; display: block; margin: 0 auto 2px auto; }
.missing { width: 180px; height: 120px; background: #eee; display: flex; align-items: center; justify-content: center; }
.text { font-size: 13px; flex: 1; min-width: 0; }
.scale { font-size: 12px; color: #777; font-weight: normal; } .baselines { color: #555; }
.text p { margin: 3px 0; overflow-wrap: anywhere; }
.status { display: inline-block; padding: 1px 6px; border-radius: 3px; font-size: 12px; color: #fff; background: #888; }
.status.ok { background: #2e7d32; } .status.edit_failed, .status.judge_failed { background: #c62828; }
.status.invalid_input { background: #6a1b9a; }
.score { font-size: 20px; font-weight: 600; }
.error { color: #c62828; } .rationale { color: #333; font-style: italic; }
</style>
</head>
<body>
<header>
<h1>{{title}}</h1>
<div class="summary">{{summary}}</div>
<label>category <select id="category"><option value="">all</option></select></label>
<label>status <select id="status"><option value="">all</option></select></label>
<label>sort <select id="sort">
<option value="dataset">dataset order</option><option value="score-desc">score, high first</option>
<option value="score-asc">score, low first</option></select></label>
<label><span id="shown">0</span> shown</label>
</header>
<div id="cards"></div>
<script type="application/json" id="data">{{data}}</script>
<script>
const data = JSON.parse(document.getElementById("data").textContent);
const items = data.items;
const controls = ["category", "status", "sort"].map(id => document.getElementById(id));
function fill(select, values) {
  for (const v of [...new Set(values)].sort()) {
    const option = document.createElement("option");
    option.value = v; option.textContent = v; select.appendChild(option);
  }
}
fill(controls[0], items.map(i => i.category));
fill(controls[1], items.map(i => i.status));
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e;
}
function figure(uri, caption, link) {
  const f = el("figure");
  if (uri) {
    const img = el("img"); img.src = uri; img.alt = caption;
    if (link) { const a = el("a"); a.href = link; a.appendChild(img); f.appendChild(a); } else f.appendChild(img);
  } else f.appendChild(el("div", "missing", "no image"));
  f.appendChild(el("div", null, caption));
  return f;
}
function fmt(x) { return x === null || x === undefined ? "–" : x.toFixed(2); }
function scaled(x, metric) {  // every number with its scale beside it
  const range = data.scale[metric];
  return fmt(x) + (range ? " (" + range[0] + "-" + range[1] + ")" : "");
}
function card(item) {
  const c = el("div", "card");
  c.dataset.category = item.category; c.dataset.status = item.status; c.dataset.id = item.id;
  const images = el("div", "images");
  const more = item.more_sources || [];
  const count = more.length + 1;
  images.appendChild(figure(item.source, count > 1 ? "source 1 of " + count : "source"));
  images.appendChild(figure(item.edited, "edited", item.edit_link));
  if (item.reference) images.appendChild(figure(item.reference, "reference"));
  else images.appendChild(el("div"));  // an empty slot: the text column starts at the same place on every card
  more.forEach((uri, k) => images.appendChild(figure(uri, "source " + (k + 2) + " of " + count)));
  c.appendChild(images);
  const t = el("div", "text");
  const head = el("p");
  head.appendChild(el("span", "score", fmt(item.score)));
  const range = data.scale[data.primary];
  if (range) head.appendChild(el("span", "scale", " " + data.primary + " (" + range[0] + "-" + range[1] + ")"));
  head.appendChild(document.createTextNode(" "));
  head.appendChild(el("span", "status " + item.status, item.status));
  head.appendChild(document.createTextNode(" " + item.category + " · " + item.id));
  t.appendChild(head);
  const metrics = Object.entries(item.metrics || {});
  if (metrics.length) t.appendChild(el("p", null, metrics.map(([k, v]) => k + " " + scaled(v, k)).join(" · ")));
  const baselines = Object.entries(item.baselines || {});
  if (baselines.length) {
    t.appendChild(el("p", "baselines", "Sanity baselines (" + data.primary + "): " +
      baselines.map(([k, v]) => k + " " + scaled(v, data.primary)).join(" · ")));
  }
  t.appendChild(el("p", null, "Instruction: " + item.instruction));
  if (item.reference_text) t.appendChild(el("p", null, "Reference: " + item.reference_text));
  if (item.rationale) t.appendChild(el("p", "rationale", "Judge: " + item.rationale));
  if (item.flags.length) t.appendChild(el("p", "error", "flags: " + item.flags.join(", ")));
  if (item.error) t.appendChild(el("p", "error", item.error));
  c.appendChild(t);
  return c;
}
function render() {
  const [category, status, sort] = controls.map(c => c.value);
  let shown = items.filter(i => (!category || i.category === category) && (!status || i.status === status));
  const key = i => i.score === null ? -Infinity : i.score;
  if (sort === "score-desc") shown.sort((a, b) => key(b) - key(a) || a.position - b.position);
  if (sort === "score-asc") {
    shown.sort((a, b) => (a.score === null) - (b.score === null) || key(a) - key(b) || a.position - b.position);
  }
  const cards = document.getElementById("cards");
  cards.replaceChildren();
  for (const item of shown) cards.appendChild(card(item));  // no spread: fine for any number of samples
  document.getElementById("shown").textContent = shown.length;
  const hash = new URLSearchParams();
  if (category) hash.set("category", category); if (status) hash.set("status", status);
  if (sort !== "dataset") hash.set("sort", sort);
  history.replaceState(null, "", hash.toString() ? "#" + hash.toString() : location.pathname);
}
const initial = new URLSearchParams(location.hash.slice(1));
controls.forEach(c => {
  const wanted = initial.get(c.id);
  if (wanted !== null && [...c.options].some(o => o.value === wanted)) c.value = wanted;
  c.addEventListener("change", render);
});
render();
</script>
</body>
</html>
"""
