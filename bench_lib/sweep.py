"""A sweep: several variants of one editor (a training run's checkpoints as LoRA adapters, or other pipelines)
scored in one job, each variant a run of its own in `output_dir/<variant>/`. This module expands the variants
and writes (and reads back) the sweep report; bench_lib.runner runs them, as it runs a plain run (a sweep of
one unit).

```
every rank: load the base pipeline once ─► variant 1's shard ─► swap the adapter in place ─► variant 2's ...
            (another pipeline: freed and loaded; barriers per batch as in a plain run)
            free the editor once ─► load the judge once ─► judge every variant's edits and the sanity baselines'
            images (once for the whole sweep) in one stage, batches planned over all of them
main:       each variant's outputs (results.jsonl, report.json/md, gallery, baselines copied in), then
            sweep.json / sweep.md / sweep_chart.png: every metric per variant, the paired difference from the
            reference (the first variant), the best variant per metric against the runner-up, and the timings
```

A variant's edits are bitwise those of a single run with its settings: the same seeds, the same adapter loading
(never fused), and its fingerprint is the single run's, so a variant folder can even be resumed by a plain run.
A rerun resumes every variant; a folder sweep that gained adapters edits and judges only the new ones.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from .config import BenchmarkConfig, ConfigError
from .metrics import NO_VALUE, Metric, fmt
from .options import config_from_dict
from .protocols.base import primary_metric
from .registry import PROTOCOLS

SWEEP_JSON, SWEEP_MD, SWEEP_CHART = "sweep.json", "sweep.md", "sweep_chart.png"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_RESERVED = {SWEEP_JSON, SWEEP_MD, SWEEP_CHART}
BASE = "base"


@dataclass
class Variant:
    name: str
    overrides: dict[str, Any]  # the editor keys it sets (over the recipe's)
    cfg: BenchmarkConfig  # a plain run's config: output_dir/<name>, no sweep

    @property
    def step(self) -> Optional[int]:
        return checkpoint_step(self.name)


def natural_key(name: str) -> list:
    """`step-100` < `step-1000`, `ckpt-9` < `ckpt-10`."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)
            if part]


LORA_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")  # diffusers' and PEFT's names


def checkpoint_overrides(path: Path) -> Optional[dict[str, Any]]:
    """The editor keys that load what one entry of a `--sweep` folder holds, or None when it holds nothing the
    editor can load (a `logs/` or `runs/` folder, a README). The layouts a training job writes are recognised here,
    and only here:

    - `checkpoint-500/pytorch_lora_weights.safetensors` (diffusers' LoRA training scripts, beside the optimizer's
      state) or `checkpoint-500/adapter_model.safetensors` with `adapter_config.json` (PEFT): a LoRA adapter
      (`lora`, and `lora_weight_name` where the folder holds other .safetensors files);
    - `checkpoint-500/transformer/` (a full fine-tune: a diffusers model folder): the pipeline's transformer
      (`editor_transformer`);
    - a folder with one `.safetensors` file directly in it, or such a file: a LoRA adapter."""
    if path.name.startswith("."):
        return None
    if path.is_file():
        return {"lora": str(path.resolve())} if path.suffix == ".safetensors" else None
    if not path.is_dir():
        return None
    weights = sorted(p.name for p in path.iterdir() if p.suffix == ".safetensors" and p.is_file())
    for name in LORA_FILES:
        if name in weights:
            return {"lora": str(path.resolve()), "lora_weight_name": name if len(weights) > 1 else None}
    transformer = path / "transformer"
    if (transformer / "config.json").is_file() and any(transformer.glob("*.safetensors")):
        return {"editor_transformer": str(transformer.resolve())}
    if weights:
        return {"lora": str(path.resolve())}  # several files: the variant's check names it and asks which
    return None


def _order(entry: Path) -> tuple:
    """Checkpoints by their step (`checkpoint-1000` after `checkpoint-500`), then other names in natural order;
    ties by name (never the filesystem's order)."""
    name = entry.stem if entry.is_file() else entry.name
    step = checkpoint_step(name)
    return (0, step, [], name) if step is not None else (1, 0, natural_key(name), name)


def select(names: list[str], sweep: Any) -> list[str]:
    """The variants of a folder sweep that `sweep_glob`, `sweep_every` and `sweep_last` keep, in order."""
    out = [n for n in names if not sweep.sweep_glob or fnmatch.fnmatchcase(n, sweep.sweep_glob)]
    if sweep.sweep_every:
        out = [n for n in out if checkpoint_step(n) is not None and checkpoint_step(n) % sweep.sweep_every == 0]
    if sweep.sweep_last:
        out = out[-sweep.sweep_last:]
    return out


def variant_specs(cfg: BenchmarkConfig, *, announce: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(name, editor overrides) of every variant, the reference first. `announce`: log, once, the subfolders of a
    `--sweep` folder that are not variants."""
    spec = cfg.sweep.sweep
    no_adapter = {"lora": None, "lora_weight_name": None}
    folder = isinstance(spec, str) and Path(spec).expanduser().is_dir()
    if not folder and selection(cfg.sweep) != "no selection":
        raise ConfigError(f"{selection(cfg.sweep)} select(s) among the checkpoints of a folder `sweep`; `sweep` "
                          f"{spec!r} is not a folder.")
    if isinstance(spec, list):
        out = []
        for i, item in enumerate(spec):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ConfigError(f"`sweep` item {i} must be a mapping with a `name` (and the editor keys it sets), "
                                  f"got {item!r}.")
            out.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
        return out
    path = Path(spec).expanduser()
    if "=" in spec and not path.exists():  # a path that exists is a path, '=' in it or not (lr=1e-4/ckpts)
        out = []
        for item in (i for i in spec.split(",") if i.strip()):
            name, _, where = item.partition("=")
            where = where.strip()
            out.append((name.strip(), dict(no_adapter) if where in ("", "none") else {**no_adapter, "lora": where}))
        return out
    reference = [(BASE, dict(no_adapter))] if cfg.sweep.sweep_base else []
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ConfigError(f"`sweep` {spec!r} is a file, not an adapter: give a folder of checkpoints, one "
                              "adapter's .safetensors file, or NAME=PATH,...")
        return reference + [(path.stem, {**no_adapter, **checkpoint_overrides(path)})]
    if not path.is_dir():
        raise ConfigError(f"`sweep` {spec!r}: no such file or folder (a folder of checkpoints, an adapter's "
                          ".safetensors file, or NAME=PATH,...).")
    entries = sorted(path.iterdir(), key=_order)
    # A training run's output: its checkpoints are the variants; files beside them (the final weights, a model
    # card) are not.
    training = any(e.is_dir() and checkpoint_step(e.name) is not None for e in entries)
    found, skipped, beside, broken = {}, [], [], []
    for entry in entries:
        overrides = None if training and entry.is_file() else checkpoint_overrides(entry)
        if overrides is not None:
            found[entry.stem if entry.is_file() else entry.name] = {**no_adapter, **overrides}
        elif entry.is_symlink() and not entry.exists():
            broken.append(entry.name)
        elif entry.is_dir() and not entry.name.startswith("."):
            skipped.append(entry.name)
        elif entry.suffix == ".safetensors":
            beside.append(entry.name)
    if not found:
        none = f"; its subfolders hold none: {', '.join(skipped)}" if skipped else ""
        raise ConfigError(f"`sweep` folder {spec!r} has no adapters or models (checkpoint folders holding LoRA "
                          f"weights or a transformer/ model, or .safetensors files){none}.")
    kept = select(list(found), cfg.sweep)
    if not kept:
        raise ConfigError(f"`sweep` folder {spec!r}: none of its {len(found)} checkpoints ({', '.join(found)}) is "
                          f"kept by {selection(cfg.sweep)}.")
    if announce:
        log = logging.getLogger(__name__)
        if skipped:
            log.info("sweep folder %s: not variants (no adapter or model in them): %s", spec,
                     ", ".join(f"{name}/" for name in skipped))
        if broken:
            log.info("sweep folder %s: not variants (links to nothing): %s", spec, ", ".join(broken))
        if beside:
            log.info("sweep folder %s: files beside its checkpoints are not variants: %s (sweep one with --sweep "
                     "FILE)", spec, ", ".join(beside))
        if len(kept) < len(found):
            log.info("sweep folder %s: %d of %d checkpoints kept by %s: %s", spec, len(kept), len(found),
                     selection(cfg.sweep), ", ".join(kept))
    return reference + [(name, found[name]) for name in kept]


def selection(sweep: Any) -> str:
    """The selection options set, as the command line spells them."""
    parts = [f"--{key} {getattr(sweep, key)}" for key in ("sweep_glob", "sweep_every", "sweep_last")
             if getattr(sweep, key)]
    return " ".join(parts) or "no selection"


def expand(cfg: BenchmarkConfig, *, announce: bool = False,
           specs: Optional[list[tuple[str, dict[str, Any]]]] = None) -> list[Variant]:
    """The sweep's variants as plain runs' configs. Raises ConfigError for a bad name or a key a variant may not
    set (only the editor backend's own keys vary: the data, the judge and the seed are the sweep's). `specs`:
    `variant_specs` as one process found them (the run's main process: a training job may add a checkpoint to the
    folder while the processes start, and every rank must run the same variants)."""
    specs = variant_specs(cfg, announce=announce) if specs is None else specs
    names = [name for name, _ in specs]
    bad = [n for n in names if not _NAME.fullmatch(n) or n in _RESERVED]
    if bad:
        raise ConfigError(f"sweep variant name {bad[0]!r} can't be a folder name: use letters, digits, '.', '_', "
                          "'+', '-' (starting with a letter or digit).")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"sweep variant names must be unique; repeated: {repeated}.")
    check_steps(names, tracked=bool(cfg.tracking.names()))
    allowed = {f.name for f in fields(cfg.editor_backend)}
    flat = {**cfg.to_dict(), "sweep": None}
    variants = []
    for name, overrides in specs:
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ConfigError(f"sweep variant {name!r} sets {unknown}: a variant sets only the {cfg.editor.editor} "
                              f"editor's keys ({sorted(allowed)}).")
        values = {**flat, **overrides, "output_dir": str(Path(cfg.run.output_dir) / name)}
        try:
            variants.append(Variant(name, overrides, config_from_dict(values, recipe=cfg.recipe)))
        except ConfigError as err:
            raise ConfigError(f"sweep variant {name!r}: {err}") from None
    return variants


MAX_STEP = 2**63 - 1  # the trackers' step is a signed 64-bit integer


def check_steps(names: list[str], *, tracked: bool = False) -> None:
    """ConfigError for variants whose step (`checkpoint_step`) a tracker can't take or that share one step
    (`checkpoint-100`, `checkpoint-00100`): their reports, chart and tracker logs would not tell them apart.
    `tracked` (the run logs to trackers): a name without a step logs at 0, so two such variants (`base` and
    `step-100`, or `a` and `b`), or one and `checkpoint-0`, are refused too: a tracker would keep one variant's
    values at that step (W&B merges the two logs into one row), or both under one name."""
    steps: dict[int, list[str]] = {}
    for name in names:
        step = checkpoint_step(name)
        if step is None:
            if tracked:
                steps.setdefault(0, []).append(name)
            continue
        if step > MAX_STEP:
            raise ConfigError(f"sweep variant {name!r}: its step {step} is above {MAX_STEP} (2**63-1), the largest a "
                              "tracker can log: rename the checkpoint.")
        steps.setdefault(step, []).append(name)
    shared = next((group for group in steps.values() if len(group) > 1), None)
    if shared and any(checkpoint_step(name) is None for name in shared):
        raise ConfigError(f"sweep variants {', '.join(shared)} would log at the same tracker step 0 (`log_with`: a "
                          "variant logs at the step its checkpoint-N name carries, a name without one at 0), where "
                          "the trackers can't tell them apart: name the variants checkpoint-N, or sweep without "
                          "`log_with` and compare them in the sweep report.")
    if shared:
        raise ConfigError(f"sweep variants {', '.join(shared)} have the same step {checkpoint_step(shared[0])}: "
                          "keep one of them (or select with --sweep_glob).")


def check_variant_folders(top: Path, variants: list[Variant]) -> None:
    """Main process, with the sweep's folder locked: a variant's folder is the sweep's, never a link out of it."""
    for variant in variants:
        folder = top / variant.name
        if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
            raise ConfigError(f"{folder} is {'a symbolic link' if folder.is_symlink() else 'not a folder'}: a "
                              "sweep writes each variant into a folder of its own, never through a link. "
                              "Remove it, or use another output_dir.")


def discard_sweep_report(top: Path) -> None:
    """With --overwrite, once every variant folder is checked: the old sweep report goes with the old outputs (a
    sweep killed after that must not leave it looking current beside emptied variant folders)."""
    for name in (SWEEP_JSON, SWEEP_MD, SWEEP_CHART):
        (top / name).unlink(missing_ok=True)


# --- the sweep report ---------------------------------------------------------------------------------------


def sweep_report(top: Path, variants: list[Variant], per_unit: Optional[list[list[dict]]] = None) -> dict[str, Any]:
    """sweep.json's content, from the variants' finished run folders (read through the same consistency check as
    compare_runs, and compared with the same paired tests)."""
    from .compare import load_run

    runs = [load_run(top / v.name) for v in variants]  # each folder read and checked once
    return summarise(variants, runs, timings=sweep_timings(variants, per_unit) if per_unit else None)


def declared_metrics(report: dict[str, Any]) -> tuple[str, tuple[Metric, ...], Metric]:
    """The protocol a run's report names, its metrics as the protocol declares them, and its primary metric."""
    name = report["protocol"]["name"]
    metrics = PROTOCOLS.get(name).metrics
    return name, metrics, primary_metric(metrics, name)


def summarise(variants: list[Variant], runs: list[dict[str, Any]], *,
              timings: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The sweep report of the variants' loaded runs (`bench_lib.compare.load_run`, in the variants' order): every
    metric of the protocol, `primary` its primary metric; the best variant per metric has the highest or the lowest
    mean, as the metric's declaration says."""
    reports = [run["report"] for run in runs]
    protocol, declared, primary = declared_metrics(reports[0])
    metrics = [m.name for m in declared]
    reference = runs[0]
    direction = {m.name: m.higher_is_better for m in declared}
    rows = []
    for variant, run, report in zip(variants, runs, reports):
        overall = report["overall"]
        rows.append({
            "name": variant.name, "step": variant.step, "folder": variant.name, "overrides": variant.overrides,
            "editor_model": report["meta"]["editor_model"],
            "metrics": {m: overall["metrics"].get(m) for m in metrics},
            "count": overall["count"], "failed": overall["failed"],
            "vs_reference": None if run is reference else {m: _judged(_paired(reference, run, m), direction[m])
                                                           for m in metrics},
        })
    run_of = {v.name: run for v, run in zip(variants, runs)}
    best = {}
    for metric in declared:
        m, sign = metric.name, 1 if metric.higher_is_better else -1
        ranked = sorted((r for r in rows if (r["metrics"][m] or {}).get("mean") is not None),
                        key=lambda r: -sign * r["metrics"][m]["mean"])
        if not ranked:
            best[m] = None
            continue
        entry = {"variant": ranked[0]["name"], "mean": ranked[0]["metrics"][m]["mean"], "runner_up": None}
        if len(ranked) > 1:
            first, second = (run_of[x["name"]] for x in ranked[:2])
            test = _paired(second, first, m)
            better_side = test["ci"] and (test["ci"][0] > 0 if metric.higher_is_better else test["ci"][1] < 0)
            entry.update(runner_up=ranked[1]["name"], vs_runner_up=test,
                         significant=bool(better_side and test["p_value"] is not None and test["p_value"] < 0.05))
        best[m] = entry
    stamp = {"variants": {v.name: report["stamp"] for v, report in zip(variants, reports)}}
    return {"reference": variants[0].name, "metrics": metrics, "primary": primary.name, "protocol": protocol,
            "higher_is_better": {m.name: m.higher_is_better for m in declared}, "variants": rows, "best": best,
            "method": {"difference": "B - A over the sample ids both runs scored: 95% paired percentile bootstrap "
                                     "and a two-sided paired permutation p-value, as scripts/compare_runs.py",
                       "significant": "the best variant's difference from the runner-up has a 95% interval on the "
                                      "better side of 0 (above it where higher is better) and p < 0.05; a "
                                      "variant's difference from the reference is significant when its 95% "
                                      "interval excludes 0 and p < 0.05 (`better` or `worse` by the metric's "
                                      "direction)"},
            "timings": timings, "stamp": stamp}


def sweep_stamp_line(stamp: dict[str, Any]) -> str:
    """The line sweep.md and the chart carry: the digest of the variants' output stamps sweep.json was made from."""
    digest = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode("utf-8")).hexdigest()
    return f"Sweep report of {len(stamp['variants'])} variants' outputs; their stamps' sha256 {digest}."


def read_sweep(top: Path) -> dict[str, Any]:
    """A finished sweep's report (sweep.json), after checking that every variant folder still holds the reporting
    pass it was made from (a variant resumed or rerun on its own since, or a sweep killed while it rewrote its
    variants, changes their stamps) and that sweep.md and the chart are this report's. Raises `ConfigError`
    (`InconsistentRun` when the files disagree), naming them."""
    from .store import STAMP_TEXT_KEY, InconsistentRun, _read_json_file, read_run

    top = Path(top)
    if not (top / SWEEP_JSON).is_file():
        raise ConfigError(f"{top} is not a finished sweep: it has no {SWEEP_JSON}")
    report = _read_json_file(top / SWEEP_JSON)
    stamp = report.get("stamp")
    if not isinstance(stamp, dict) or not isinstance(stamp.get("variants"), dict):
        raise InconsistentRun(f"{top}: {SWEEP_JSON} has no output stamp (an older harness): rerun the sweep's "
                              "command to rewrite it.")
    disagree = []
    for name, expected in stamp["variants"].items():
        try:
            found = read_run(top / name)["run"]["outputs"]
        except ConfigError:
            disagree.append(f"{name}/ (not a finished run now)")
            continue
        if found != expected:
            disagree.append(f"{name}/ (outputs of attempt {found.get('attempt')}, not of attempt "
                            f"{expected.get('attempt')})")
    line = sweep_stamp_line(stamp)
    if (top / SWEEP_MD).is_file() and line not in (top / SWEEP_MD).read_text(encoding="utf-8", errors="replace"):
        disagree.append(SWEEP_MD)
    if (top / SWEEP_CHART).is_file():
        from PIL import Image

        with Image.open(top / SWEEP_CHART) as image:
            if image.info.get(STAMP_TEXT_KEY) != line:
                disagree.append(SWEEP_CHART)
    if disagree:
        raise InconsistentRun(f"{top}: its sweep report does not match its variants' outputs ({'; '.join(disagree)}), "
                              "as after a kill, or a run in a variant's folder since. Rerun the sweep's command to "
                              "rewrite it.")
    return report


def _paired(a: dict[str, Any], b: dict[str, Any], metric: str) -> dict[str, Any]:
    """compare()'s overall test of B - A and its per-category tests, without the folders (they are the variants');
    when there is nothing to compare (no sample scored in both), the reason instead of a number."""
    from .compare import Refusal, compare

    try:
        result = compare(a, b, metric=metric)
    except Refusal as err:
        return {"difference": None, "ci": None, "p_value": None, "error": str(err)}
    return {**result["overall"], "categories": result["categories"], "scored": result["scored"],
            "warnings": result["warnings"]}


def _judged(test: dict[str, Any], higher_is_better: bool) -> dict[str, Any]:
    """A paired test of B - A with its verdict: `significant` when the 95% interval excludes 0 and p < 0.05, and
    `direction` "better" or "worse" for B by the metric's direction (None when not significant)."""
    ci, p = test.get("ci"), test.get("p_value")
    significant = bool(ci and p is not None and p < 0.05 and (ci[0] > 0 or ci[1] < 0))
    direction = None
    if significant:
        direction = "better" if (ci[0] > 0) == higher_is_better else "worse"
    return {**test, "significant": significant, "direction": direction}


def significance_cell(test: Optional[dict[str, Any]]) -> str:
    """sweep.md's verdict on a variant's difference from the reference."""
    if not test or test.get("difference") is None:
        return ""
    return f"**yes, {test['direction']}**" if test.get("significant") else "no"


def sweep_timings(variants: list[Variant], per_unit: list[list[dict]]) -> dict[str, Any]:
    """Seconds, the slowest rank's where ranks wait for each other: each variant's editor load (the base, and a
    reload for another pipeline), adapter swap and edit time, s/image (barrier waits excluded, over all ranks),
    then the one model switch and the one judge stage."""
    out: dict[str, Any] = {"variants": []}
    for variant, ranks in zip(variants, per_unit):
        t = [r["timings"] for r in ranks]
        edited = sum(x["edited"] for x in t)
        busy = sum(x["edit"] - x["barrier_wait"] for x in t)
        out["variants"].append({"name": variant.name, "load_editor_s": round(max(x["load_editor"] for x in t), 3),
                                "adapter_swap_s": round(max(x["adapter_swap"] for x in t), 3),
                                "edit_s": round(max(x["edit"] for x in t), 3), "edited": edited,
                                "edit_s_per_image": round(busy / edited, 4) if edited else None})
    t = [r["timings"] for r in per_unit[0]]
    out.update(switch_s=round(max(x["switch"] for x in t), 3), judge_s=round(max(x["judge"] for x in t), 3),
               judged=sum(x["judged"] for x in t),
               per_rank=[{"editor_loads": sum(ranks[i]["timings"]["editor_loads"] for ranks in per_unit),
                          "adapter_swaps": sum(ranks[i]["timings"].get("adapter_swaps", 0) for ranks in per_unit),
                          "judge_loads": t[i]["judge_loads"]} for i in range(len(t))])
    return out


def write_sweep_report(top: Path, variants: list[Variant], per_unit: Optional[list[list[dict]]]) -> dict[str, Any]:
    from .outputs import optional_output
    from .store import write_json, write_text

    report = sweep_report(top, variants, per_unit)
    write_json(top / SWEEP_JSON, report)
    chart = optional_output(top / SWEEP_CHART, lambda: write_sweep_chart(top / SWEEP_CHART, report))
    write_text(top / SWEEP_MD, render_sweep(report, chart=SWEEP_CHART if chart else None))
    return report


def _interval(ci: Optional[list[float]], digits: int = 2) -> str:
    return "" if not ci else f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def render_sweep(report: dict[str, Any], *, chart: Optional[str]) -> str:
    from .report import md_cell

    ref, primary = report["reference"], report["primary"]
    others = [m for m in report["metrics"] if m != primary]
    lines = [f"# Sweep: {len(report['variants'])} variants", "",
             f"Protocol `{report['protocol']}`; reference variant `{md_cell(ref)}`. Each variant is a run of its own "
             "in its folder (report.md there). Means with 95% bootstrap CIs; the difference from the reference is "
             "paired over the samples both scored, with the permutation p-value (as compare_runs); `significant`: "
             "its 95% interval excludes 0 and p < 0.05.", "",
             f"| variant | step | {primary} | Δ {primary} vs {md_cell(ref)} | p | significant | "
             + " | ".join(md_cell(m) for m in others) + " | scored | failed |",
             "|---|---:|---|---|---:|---|" + "---|" * len(others) + "---:|---:|"]
    for row in report["variants"]:
        stats = row["metrics"]
        cells = [f"{fmt((stats[m] or {}).get('mean'))}{_interval((stats[m] or {}).get('ci95'))}"
                 for m in [primary, *others]]
        diff = (row["vs_reference"] or {}).get(primary)
        delta = "reference" if diff is None else f"{fmt(diff['difference'], 3)}{_interval(diff['ci'], 3)}"
        p = "" if diff is None else fmt(diff["p_value"], 4)
        step = "" if row["step"] is None else str(row["step"])
        lines.append(f"| {md_cell(row['name'])} | {step} | {cells[0]} | {delta} | {p} | {significance_cell(diff)} | "
                     + " | ".join(cells[1:]) + f" | {row['count']} | {row['failed']} |")
    lines += ["", "## Best variant per metric", "",
              "| metric | best | mean | runner-up | difference [95% CI] | p | significant |",
              "|---|---|---:|---|---|---:|---|"]
    for m in report["metrics"]:
        b = report["best"].get(m)
        if not b:
            lines.append(f"| {md_cell(m)} | {NO_VALUE} | | | | | |")
            continue
        test = b.get("vs_runner_up")
        lines.append(f"| {md_cell(m)} | {md_cell(b['variant'])} | {fmt(b['mean'])} | "
                     f"{md_cell(b['runner_up'] or NO_VALUE)} | "
                     + (f"{fmt(test['difference'], 3)}{_interval(test['ci'], 3)} | {fmt(test['p_value'], 4)} | "
                        f"{'yes' if b['significant'] else 'no'} |" if test else "| | |"))
    timings = report.get("timings")
    if timings:
        lines += ["", "## Timings", "", "| variant | editor load (s) | adapter swap (s) | edit (s) | s/image |",
                  "|---|---:|---:|---:|---:|"]
        for t in timings["variants"]:
            lines.append(f"| {md_cell(t['name'])} | {t['load_editor_s']:.2f} | {t['adapter_swap_s']:.3f} | "
                         f"{t['edit_s']:.2f} | {fmt(t['edit_s_per_image'], 3)} |")
        loads = [r["editor_loads"] for r in timings["per_rank"]]
        lines += ["", f"Model switch {timings['switch_s']:.2f} s, judge stage {timings['judge_s']:.2f} s "
                      f"({timings['judged']} judgements). Editor loads per rank: {loads}; judge loads per rank: "
                      f"{[r['judge_loads'] for r in timings['per_rank']]}. (Timings of this attempt: a resumed "
                      "sweep shows only the work it did.)"]
    if chart:
        lines += ["", f"![each metric per variant]({chart})"]
    if report.get("stamp"):
        lines += ["", sweep_stamp_line(report["stamp"])]
    return "\n".join(lines) + "\n"


def chart_metrics(report: dict[str, Any]) -> list[Metric]:
    """The metrics the sweep chart draws, as the protocol declares them: those with a mean in some variant."""
    return [m for m in PROTOCOLS.get(report["protocol"]).metrics
            if any((r["metrics"][m.name] or {}).get("mean") is not None for r in report["variants"])]


def sweep_figure(report: dict[str, Any], metrics: list[Metric]):
    """One panel per metric: the mean and its 95% CI per variant on the metric's whole shown range (so every
    whisker fits, and panels of one scale compare by eye), over training steps when the variants' names carry
    them (the reference without a step is a dashed line across), else one point per variant."""
    from matplotlib.figure import Figure

    rows = report["variants"]
    stepped = [r for r in rows if r["step"] is not None]
    use_steps = len(stepped) >= 2 and len({r["step"] for r in stepped}) == len(stepped)
    figure = Figure(figsize=(7.6, 0.6 + 2.2 * len(metrics)), dpi=100, layout="constrained")
    figure.suptitle("Mean per variant (95% CI)" + (" over training steps" if use_steps else ""), x=0.02,
                    ha="left", fontsize=11)
    panels = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for axes, metric in zip(panels, metrics):
        points = [(r, r["metrics"][metric.name]) for r in rows
                  if (r["metrics"][metric.name] or {}).get("mean") is not None]
        plotted = [(r, s) for r, s in points if not use_steps or r["step"] is not None]
        xs = [r["step"] for r, _ in plotted] if use_steps else list(range(len(plotted)))
        means = [s["mean"] for _, s in plotted]
        low_err = [s["mean"] - s["ci95"][0] if s.get("ci95") else 0.0 for _, s in plotted]
        high_err = [s["ci95"][1] - s["mean"] if s.get("ci95") else 0.0 for _, s in plotted]
        axes.errorbar(xs, means, yerr=[low_err, high_err], fmt="-o" if use_steps else "o", color="#285aa0",
                      ecolor="#5a5a5a", elinewidth=1, capsize=3, markersize=5)
        for r, s in points:
            if use_steps and r["step"] is None:  # the reference without a step: a dashed line across
                axes.axhline(s["mean"], color="#c8503c", linestyle="--", linewidth=1, label=r["name"])
                axes.legend(loc="best", fontsize=8, frameon=False)
        if not use_steps:
            axes.set_xticks(xs, [r["name"][:14] for r, _ in plotted])
            axes.set_xlim(-0.5, len(xs) - 0.5)
        else:
            axes.set_xticks(xs, [str(x) for x in xs])
        low, high = metric.shown_range
        margin = (high - low) * 0.05
        axes.set_ylim(low - margin, high + margin)
        axes.set_ylabel(metric.name)
        axes.grid(axis="y", color="#e1e1e1")
        axes.set_title(f"{metric.name} ({low:g}-{high:g}, {'higher' if metric.higher_is_better else 'lower'} is "
                       "better)", loc="left", fontsize=10)
    return figure


def write_sweep_chart(path: Path, report: dict[str, Any]) -> bool:
    """The sweep chart (see `sweep_figure`) as a PNG carrying the sweep report's stamp. False, writing nothing,
    when no metric has a mean."""
    from .report import figure_image
    from .store import STAMP_TEXT_KEY, save_png

    metrics = chart_metrics(report)
    if not metrics:
        return False
    save_png(figure_image(sweep_figure(report, metrics)), path,
             text={STAMP_TEXT_KEY: sweep_stamp_line(report["stamp"])} if report.get("stamp") else None)
    return True


_CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)")


def checkpoint_step(name: str) -> Optional[int]:
    """The training step a variant's name carries (`checkpoint-500` -> 500); None for a name without one (`base`)."""
    match = _CHECKPOINT_STEP.fullmatch(name)
    return int(match.group(1)) if match else None
