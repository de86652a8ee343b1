"""Paired comparison of two runs on the same data: is B better than A, per category and overall, on any metric
of their protocol? Used by `scripts/compare_runs.py` and by the sweep report.

Only sample ids that both runs scored (status ok, the metric defined for both) are compared, as pairs. Per
category and overall: the two means over those pairs, the mean difference B - A with its 95% paired-bootstrap
interval (the pairs are resampled), and the two-sided p-value of a paired permutation test of the differences'
signs: exact (every sign pattern) when there are few pairs, else Monte Carlo (`p_value_method` says which, per
row). Fixed seed: the same runs give the same table. Values are on the scale the report shows (KRIS's 0-100,
RE-Edit's yes-rate in %).

Runs whose data (content, split, column mapping, pixel cap), rubrics, protocol (and its prompts), scoring
version, score formula or failure policy differ are refused: their numbers do not measure the same thing.
Another judge (model, mode, settings) is allowed, as that is how judges are compared, and reported as a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .config import ConfigError
from .metrics import NO_VALUE, Metric, fmt
from .report import md_cell
from .scoring import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, paired_difference
from .store import read_run

# run.json fingerprint sections that must match, and those whose differences are warnings
MUST_MATCH = ("data", "rubrics", "protocol", "scoring")
WARN_IF_DIFFERENT = ("judge",)
P_VALUE_METHOD = ("two-sided paired permutation test of the signs of the differences: exact (all 2^n sign "
                  "patterns) when 2^n <= resamples, else `resamples` random sign flips (Monte Carlo); each "
                  "row's p_value_method says which")


class Refusal(Exception):
    """Two runs that can't be compared (or a folder that is not a finished run)."""


def load_run(folder: Path) -> dict[str, Any]:
    """A finished run whose outputs all come from one reporting pass (else Refusal, naming the files)."""
    try:
        run = read_run(Path(folder))
    except ConfigError as err:
        raise Refusal(str(err)) from None
    return {"folder": Path(folder), "fingerprint": run["fingerprint"], "rows": run["rows"],
            "meta": run["report"]["meta"], "protocol": run["report"].get("protocol"), "report": run["report"]}


def differences(a: Any, b: Any, path: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in A, value in B) of every leaf where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(key), b.get(key), f"{path}.{key}")]
    return [] if a == b else [(path, a, b)]


def check_comparable(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Raises Refusal when the runs measure different things; returns warnings for allowed differences."""
    fa, fb = a["fingerprint"], b["fingerprint"]
    differ = [k for k in MUST_MATCH if fa.get(k) != fb.get(k)]
    protocol = (a.get("protocol") or {}).get("name", "default")
    if protocol == "default":  # the score formula only combines the default protocol's sub-scores
        formula = lambda run: (run["meta"].get("score_formula"), run["meta"].get("score_weights"))  # noqa: E731
        if formula(a) != formula(b):
            differ.append(f"score_formula ({formula(a)} vs {formula(b)})")
    if failure_policy(a) != failure_policy(b):  # unparsed answers filled in one run, failed in the other
        differ.append(f"failure_policy ({failure_policy(a)} vs {failure_policy(b)})")
    if differ:
        raise Refusal(f"the runs are not comparable: {', '.join(differ)} differ. Compare runs of the same "
                      "dataset, rubrics, protocol, score formula and failure policy.")
    return [f"{path} differs: {va!r} (A) vs {vb!r} (B)" for k in WARN_IF_DIFFERENT
            for path, va, vb in differences(fa.get(k), fb.get(k), k)]


def failure_policy(run: dict[str, Any]) -> str:
    """How the run counted answers that did not parse (report.json's config; a run from before the key: strict)."""
    return (run["meta"].get("config") or {}).get("failure_policy") or "strict"


def recorded_metric(run: dict[str, Any], name: str) -> Optional[Metric]:
    """Metric `name` as the run's report.json declares it (its range and shown scale), or None where the report
    declares no metrics (a run without a protocol: `score` shown as it is)."""
    declaration = ((run.get("protocol") or {}).get("metrics") or {}).get(name)
    return Metric.recorded(name, declaration) if declaration else None


def metric_values(run: dict[str, Any], metric: str) -> dict[str, float]:
    """sample id -> the metric's value on the report's scale, for the scored rows that have it."""
    declared = recorded_metric(run, metric)
    out = {}
    for row in run["rows"]:
        if row["status"] != "ok":
            continue
        value = row["score"] if metric == "score" else (row.get("metrics") or {}).get(metric)
        if value is not None:
            out[row["id"]] = declared.shown(value) if declared else value
    return out


def compare(a: dict[str, Any], b: dict[str, Any], *, metric: Optional[str] = None,
            resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise Refusal(f"resamples must be a positive whole number, got {resamples!r}")
    warnings = check_comparable(a, b)
    known = sorted((a.get("protocol") or {}).get("metrics") or {"score": {}})
    primary = (a.get("protocol") or {}).get("primary") or "score"
    metric = primary if metric in (None, "score") else metric  # `score` is the primary metric, on its scale
    if metric != "score" and metric not in known:
        raise Refusal(f"metric {metric!r} is not one of the runs' protocol's: {known} (or score)")
    values_a, values_b = metric_values(a, metric), metric_values(b, metric)
    category = {r["id"]: r["category"] for r in a["rows"]}
    paired = [i for i in values_a if i in values_b]
    if not paired:
        raise Refusal(f"no sample id has {metric} (status ok) in both runs: nothing to compare")
    categories = sorted({category[i] for i in paired})

    def test(ids: list[str]) -> dict[str, Any]:
        return paired_difference([values_a[i] for i in ids], [values_b[i] for i in ids], resamples=resamples, seed=seed)

    return {
        "run_a": str(a["folder"]), "run_b": str(b["folder"]), "metric": metric,
        "scored": {"a": len(values_a), "b": len(values_b), "both": len(paired)},
        "method": {"ci": "95% paired percentile bootstrap of the mean difference", "p_value": P_VALUE_METHOD,
                   "resamples": resamples, "seed": seed},
        "warnings": warnings,
        "categories": {c: test([i for i in paired if category[i] == c]) for c in categories},
        "overall": test(paired),
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"# {md_cell(result['run_b'])} (B) vs {md_cell(result['run_a'])} (A): {md_cell(result['metric'])}", "",
             f"Paired over the {result['scored']['both']} sample ids scored in both runs (A scored "
             f"{result['scored']['a']}, B {result['scored']['b']}). B - A > 0 means B scores higher. 95% CI: "
             f"paired bootstrap; p: paired permutation test (exact up to 2^n <= {result['method']['resamples']}, "
             f"else Monte Carlo); {result['method']['resamples']} resamples, seed {result['method']['seed']}.", ""]
    lines += [f"Warning: {md_cell(w)}" for w in result["warnings"]] + ([""] if result["warnings"] else [])
    lines += ["| category | n | mean A | mean B | B - A | 95% CI | p |", "|---|---:|---:|---:|---:|---|---:|"]
    for name, t in [*((md_cell(c), t) for c, t in result["categories"].items()), ("**overall**", result["overall"])]:
        ci = NO_VALUE if t["ci"] is None else f"[{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]"
        diff = NO_VALUE if t["difference"] is None else f"{t['difference']:+.2f}"
        lines.append(f"| {name} | {t['n']} | {fmt(t['mean_a'])} | {fmt(t['mean_b'])} | {diff} | {ci} | "
                     f"{fmt(t['p_value'], 4)} |")
    return "\n".join(lines) + "\n"
