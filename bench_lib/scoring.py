"""Numbers from judgements: the score formula over sub-scores, rank agreement with human scores, and
bootstrap confidence intervals and paired tests for reports and run comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from .config import SUBSCORES

FORMULA_TEXT = {
    "viescore": "sqrt(min(I, C) * Q)",
    "mean": "weighted mean of I, C, Q",
    "min": "min(I, C, Q)",
    "instruction": "I",
}


def combine(subscores: dict[str, float], formula: str, weights: Optional[dict[str, float]] = None) -> float:
    """`score` (0-10) from the sub-scores instruction (I), consistency (C) and quality (Q).

    viescore is VIEScore's overall score (also GEdit-Bench's): the geometric mean of semantic consistency,
    min(instruction, consistency), and perceptual quality. It is 0 whenever the instruction was not carried
    out or the scene was destroyed, so doing nothing and returning a blank image both score near 0.
    """
    i, c, q = (subscores[name] for name in SUBSCORES)
    if formula == "viescore":
        return math.sqrt(max(min(i, c), 0.0) * max(q, 0.0))
    if formula == "mean":
        weights = weights or {name: 1.0 for name in SUBSCORES}
        total = sum(weights[name] for name in SUBSCORES)
        return sum(weights[name] * subscores[name] for name in SUBSCORES) / total
    if formula == "min":
        return min(i, c, q)
    if formula == "instruction":
        return i
    raise ValueError(f"unknown score formula {formula!r}; known: {sorted(FORMULA_TEXT)}")


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None  # a constant side: correlation is undefined, not 0
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman's rho: Pearson's r of the average ranks (ties handled). None below 2 pairs or if a side is constant."""
    return pearson(average_ranks(x), average_ranks(y))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b (adjusted for ties), by counting pairs: O(n^2), fine for benchmark sizes."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator


def agreement(pairs: list[tuple[float, float]]) -> dict[str, Optional[float]]:
    """Rank agreement between judge scores and human scores, given as (judge, human) pairs."""
    judge = [p[0] for p in pairs]
    human = [p[1] for p in pairs]
    return {"n": len(pairs), "spearman": spearman(judge, human), "kendall_tau_b": kendall_tau_b(judge, human)}


# --- uncertainty ---------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def _percentile_interval(stats: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(stats, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def _resampled_means(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of `resamples` bootstrap resamples (with replacement, same size), drawn in chunks of about
    4M indices to bound memory on large benchmarks."""
    chunk = max(1, min(1000, 2 ** 22 // len(values)))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        out.append(values[rng.integers(0, len(values), size=(size, len(values)))].mean(axis=1))
    return np.concatenate(out)


def bootstrap_ci(values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Optional[tuple[float, float]]:
    """95% percentile-bootstrap interval of the mean (fixed seed: the same data give the same interval).
    None below 2 values: one sample says nothing about its own uncertainty."""
    if len(values) < 2:
        return None
    return _percentile_interval(_resampled_means(np.asarray(values, dtype=np.float64),
                                                 np.random.default_rng(seed), resamples))


def bootstrap_macro_ci(groups: dict[str, Sequence[float]], *, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Optional[tuple[float, float]]:
    """95% interval of the macro mean (the mean of the group means), resampling within each group
    (a stratified bootstrap). None when a group has fewer than 2 values."""
    groups = {k: v for k, v in groups.items()}
    if not groups or any(len(v) < 2 for v in groups.values()):
        return None
    rng = np.random.default_rng(seed)
    per_group = [_resampled_means(np.asarray(v, dtype=np.float64), rng, resamples) for _, v in sorted(groups.items())]
    return _percentile_interval(np.mean(per_group, axis=0))


def macro_mean(groups: dict[str, Sequence[float]]) -> tuple[Optional[float], Optional[tuple[float, float]]]:
    """The macro mean (every group with a value weighs the same: the unweighted mean of the group means) and its
    95% interval resampled within each group; (None, None) without a group."""
    groups = {k: v for k, v in groups.items() if len(v)}
    if not groups:
        return None, None
    return sum(sum(v) / len(v) for v in groups.values()) / len(groups), bootstrap_macro_ci(groups)


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Mean of b - a over paired samples, its 95% paired-bootstrap interval (resampling the pairs), and
    the two-sided p-value of a paired permutation test of the signs of the differences: exact (all 2^n
    sign patterns) when 2^n <= resamples, else `resamples` random sign flips with the observed pattern
    counted as one, so p is never 0."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean_a": float(np.mean(a)) if n else None,
                           "mean_b": float(np.mean(b)) if n else None,
                           "difference": float(d.mean()) if n else None, "ci": None, "p_value": None}
    if n < 2:
        return out
    rng = np.random.default_rng(seed)
    out["ci"] = _percentile_interval(_resampled_means(d, rng, resamples))
    observed = abs(d.mean()) - 1e-12  # a tolerance, so float noise can't make the observed one not count
    if 2 ** n <= resamples:  # few pairs: every sign pattern, an exact p-value
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        out["p_value"] = float((np.abs((signs * d).mean(axis=1)) >= observed).mean())
        out["p_value_method"] = "exact"
        return out
    extreme = 0
    chunk = max(1, min(1000, 2 ** 22 // n))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        extreme += int((np.abs((signs * d).mean(axis=1)) >= observed).sum())
    out["p_value"] = (1 + extreme) / (1 + resamples)
    out["p_value_method"] = "monte carlo"
    return out
