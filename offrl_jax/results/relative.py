"""The policy against its reference: J(pi) - J(pi_ref) for algorithms that score one (ARMOR).

A record of such an algorithm carries ``reference`` (the reference policy's evaluation on the same
episodes as the policy's, :class:`~offrl_jax.training.Trainer`). Per run (seed, sweep point) the
difference is paired: both policies met the same start states. The table gives, per label and
task, the final scores of both, the mean paired difference of the final evaluation with a 95%
bootstrap CI over runs, the same for the mean of the last 10 evaluations, and the fraction of
evaluations (all runs, all steps) at which the policy scored below its reference.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from offrl_jax.results.labels import run_label
from offrl_jax.results.stats import LAST_K, stratified_bootstrap_ci


def relative_curves(records: list[dict]) -> dict[tuple[str, str], dict[int, list]]:
    """``{(label, task): {seed: [(step, score, reference score), ...] sorted by step}}`` for the
    records that carry a scored reference."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        reference = (r.get("reference") or {}).get("normalized_score")
        if reference is None or r.get("normalized_score") is None:
            continue
        out[(run_label(r), r["task"])][r["seed"]].append(
            (r["step"], r["normalized_score"], reference))
    return {key: {seed: sorted(rows) for seed, rows in seeds.items()}
            for key, seeds in out.items()}


def _mean_ci(values: np.ndarray) -> str:
    if values.size < 2:
        return f"{values.mean():+.1f}"
    low, high = stratified_bootstrap_ci([values], statistic=lambda x: x.mean(axis=-1),
                                        reps=10_000)
    return f"{values.mean():+.1f} [{low:+.1f}, {high:+.1f}]"


def reference_markdown(records: list[dict]) -> str:
    """The summary's section on reference policies ('' when no record scored one)."""
    curves = relative_curves(records)
    if not curves:
        return ""
    lines = ["", "## Against the reference policy", "",
             "| algorithm | task | runs | final | pi_ref | final - pi_ref [95% CI] | "
             f"last-{LAST_K} mean - pi_ref [95% CI] | evaluations below pi_ref |",
             "|---|---|---|---|---|---|---|---|"]
    for (label, task), seeds in sorted(curves.items()):
        finals = np.array([rows[-1][1] for rows in seeds.values()])
        references = np.array([rows[-1][2] for rows in seeds.values()])
        last = np.array([np.mean([s - ref for _, s, ref in rows[-LAST_K:]])
                         for rows in seeds.values()])
        below = [s < ref for rows in seeds.values() for _, s, ref in rows]
        lines.append(f"| {label} | {task} | {len(seeds)} | {finals.mean():.1f} | "
                     f"{references.mean():.1f} | {_mean_ci(finals - references)} | "
                     f"{_mean_ci(last)} | {sum(below)} of {len(below)} |")
    lines += ["", "pi_ref is evaluated with the policy's evaluator on the same episodes (start "
              "states and keys) at every evaluation, so each difference is paired per run. "
              "Means over runs; CIs: percentile bootstrap over runs (10,000 resamples)."]
    return "\n".join(lines) + "\n"
