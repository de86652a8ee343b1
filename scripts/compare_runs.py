"""Compare two runs of the benchmark on the same data: is B better than A, per category and overall?

    python scripts/compare_runs.py RUN_A RUN_B [--json FILE] [--resamples 10000] [--seed 0]

Only sample ids that both runs scored (status ok) are compared, as pairs. Per category and overall it
prints the two means over those pairs, the mean difference B - A with its 95% paired-bootstrap confidence
interval (the pairs are resampled), and the two-sided p-value of a paired permutation test (the sign of
each difference flipped at random). Fixed seed: the same runs give the same table.

It refuses (exit code 2) to compare runs whose data (content, split, column mapping), rubrics, scoring
version or score formula differ: their numbers do not measure the same thing. A different judge model or
mode is allowed (that is how judges are compared) and printed as a warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_lib.scoring import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, paired_difference  # noqa: E402
from bench_lib.config import ConfigError  # noqa: E402
from bench_lib.report import md_cell  # noqa: E402
from bench_lib.store import read_run  # noqa: E402

# run.json fingerprint sections: the data (content, split, column mapping, pixel cap), the rubrics and the
# harness's scoring version must match; another judge (model, mode, settings) is how judges are compared.
MUST_MATCH = ("data", "rubrics", "scoring")
WARN_IF_DIFFERENT = ("judge",)


class Refusal(Exception):
    pass


def load_run(folder: Path) -> dict[str, Any]:
    """A finished run whose outputs all come from one reporting pass (else Refusal, naming the files)."""
    try:
        run = read_run(folder)
    except ConfigError as err:
        raise Refusal(str(err)) from None
    return {"folder": folder, "fingerprint": run["fingerprint"], "rows": run["rows"], "meta": run["report"]["meta"]}


def check_comparable(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Raises Refusal when the runs measure different things; returns warnings for allowed differences."""
    fa, fb = a["fingerprint"], b["fingerprint"]
    differ = [k for k in MUST_MATCH if fa.get(k) != fb.get(k)]
    formula = lambda run: (run["meta"].get("score_formula"), run["meta"].get("score_weights"))  # noqa: E731
    if formula(a) != formula(b):
        differ.append(f"score_formula ({formula(a)} vs {formula(b)})")
    if differ:
        raise Refusal(f"the runs are not comparable: {', '.join(differ)} differ. Compare runs of the same "
                      "dataset, rubrics and score formula.")
    return [f"{path} differs: {va!r} (A) vs {vb!r} (B)" for k in WARN_IF_DIFFERENT
            for path, va, vb in differences(fa.get(k), fb.get(k), k)]


def differences(a: Any, b: Any, path: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in A, value in B) of every leaf where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str) for d in differences(a.get(key), b.get(key), f"{path}.{key}")]
    return [] if a == b else [(path, a, b)]


def compare(a: dict[str, Any], b: dict[str, Any], *, resamples: int = BOOTSTRAP_RESAMPLES,
            seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    warnings = check_comparable(a, b)
    rows_a = {r["id"]: r for r in a["rows"]}
    rows_b = {r["id"]: r for r in b["rows"]}
    paired = [i for i in rows_a if i in rows_b and rows_a[i]["status"] == "ok" and rows_b[i]["status"] == "ok"]
    if not paired:
        raise Refusal("no sample id was scored (status ok) in both runs: nothing to compare")
    categories = sorted({rows_a[i]["category"] for i in paired})

    def test(ids: list[str]) -> dict[str, Any]:
        return paired_difference([rows_a[i]["score"] for i in ids], [rows_b[i]["score"] for i in ids],
                                 resamples=resamples, seed=seed)

    return {
        "run_a": str(a["folder"]), "run_b": str(b["folder"]),
        "scored": {"a": sum(r["status"] == "ok" for r in a["rows"]), "b": sum(r["status"] == "ok" for r in b["rows"]),
                   "both": len(paired)},
        "method": {"ci": "95% paired percentile bootstrap of the mean difference",
                   "p_value": "two-sided paired permutation test (random sign flips)",
                   "resamples": resamples, "seed": seed},
        "warnings": warnings,
        "categories": {c: test([i for i in paired if rows_a[i]["category"] == c]) for c in categories},
        "overall": test(paired),
    }


def _f(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def render(result: dict[str, Any]) -> str:
    lines = [f"# {md_cell(result['run_b'])} (B) vs {md_cell(result['run_a'])} (A)", "",
             f"Paired over the {result['scored']['both']} sample ids scored in both runs (A scored "
             f"{result['scored']['a']}, B {result['scored']['b']}). B - A > 0 means B scores higher. 95% CI: "
             f"paired bootstrap; p: paired permutation test; {result['method']['resamples']} resamples, seed "
             f"{result['method']['seed']}.", ""]
    lines += [f"Warning: {md_cell(w)}" for w in result["warnings"]] + ([""] if result["warnings"] else [])
    lines += ["| category | n | mean A | mean B | B - A | 95% CI | p |", "|---|---:|---:|---:|---:|---|---:|"]
    for name, t in [*((md_cell(c), t) for c, t in result["categories"].items()), ("**overall**", result["overall"])]:
        ci = "–" if t["ci"] is None else f"[{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]"
        p = "–" if t["p_value"] is None else f"{t['p_value']:.4f}"
        diff = "–" if t["difference"] is None else f"{t['difference']:+.2f}"
        lines.append(f"| {name} | {t['n']} | {_f(t['mean_a'])} | {_f(t['mean_b'])} | {diff} | {ci} | {p} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP_RESAMPLES)
    parser.add_argument("--seed", type=int, default=BOOTSTRAP_SEED)
    args = parser.parse_args(argv)
    try:
        result = compare(load_run(args.run_a), load_run(args.run_b), resamples=args.resamples, seed=args.seed)
    except Refusal as err:
        print(f"compare_runs: {err}", file=sys.stderr)
        return 2
    print(render(result), end="")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
