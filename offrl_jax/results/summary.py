"""A run's tables: ``summary.md`` and ``summary.csv`` (normalized scores per algorithm and task,
with rliable's IQM, optimality gap and bootstrap CIs, and the reference-policy section of
:mod:`offrl_jax.results.relative`), ``probability_of_improvement.md`` and ``comparison.md``
(:mod:`offrl_jax.results.compare`). :func:`write_summary` writes them all, and the plots
(:mod:`offrl_jax.results.plots`), from a run directory's records.

A hyperparameter sweep's points are algorithms of their own in the tables, labelled
``ALGO[LEAF=VALUE]`` (e.g. ``mopo[penalty_coef=2.5]``), and the CSV gets a column per swept leaf.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from offrl_jax.files import write_text_atomic
from offrl_jax.results.compare import comparison_markdown, comparison_rows
from offrl_jax.results.labels import commit_note, run_label
from offrl_jax.results.plots import write_plots
from offrl_jax.results.records import load_records
from offrl_jax.results.relative import reference_markdown
from offrl_jax.results.scores import final_by_task, labels_in_order, seed_scores
from offrl_jax.results.settings import row_settings, run_settings, sample_std
from offrl_jax.results.stats import (
    LAST_K,
    aggregate,
    iqm_is_mean,
    probability_of_improvement,
)

_STAT_COLUMNS = ("mean", "std", "iqm", "ci_low", "ci_high", "median", "median_ci_low",
                 "median_ci_high", "mean_ci_low", "mean_ci_high", "optimality_gap",
                 "optimality_gap_ci_low", "optimality_gap_ci_high")


def summarize(records: list[dict]) -> list[dict]:
    """One row per (algorithm, task) plus an "all tasks" row per algorithm; each sweep point
    is an algorithm of its own (:func:`run_label`). When the records hold a sweep, every row
    also has a column per swept leaf (its value, or None for rows without it)."""
    scores = seed_scores(records)
    labels = labels_in_order(records)
    swept = list(dict.fromkeys(name for _, point in labels.values() for name in point))
    rows = []
    for algo, (_, point) in labels.items():
        tasks = sorted(t for a, t in scores if a == algo)
        for task in tasks + ["all tasks"]:
            keys = [(algo, t) for t in (tasks if task == "all tasks" else [task])]
            row = {"algorithm": algo, "task": task, **{name: point.get(name) for name in swept}}
            for which in ("final", "last10"):
                per_task = [np.array(list(scores[k][which].values())) for k in keys]
                per_task = [p for p in per_task if p.size]
                if not per_task:
                    row.update({f"{which}_{s}": float("nan") for s in _STAT_COLUMNS})
                    continue
                values = np.concatenate(per_task)
                stats = aggregate(per_task)
                row.update({f"{which}_mean": float(values.mean()),
                            f"{which}_std": sample_std(values),
                            f"{which}_iqm": stats["iqm"][0],
                            f"{which}_ci_low": stats["iqm"][1],
                            f"{which}_ci_high": stats["iqm"][2]})
                for name in ("mean", "median", "optimality_gap"):
                    value, low, high = stats[name]
                    if name != "mean":
                        row[f"{which}_{name}"] = value
                    row[f"{which}_{name}_ci_low"], row[f"{which}_{name}_ci_high"] = low, high
            row["seeds"] = sum(len(scores[k]["final"]) for k in keys)
            row["failed_seeds"] = sum(len(scores[k]["failed"]) for k in keys)
            row["iqm_is_mean"] = iqm_is_mean(row["seeds"])
            row["last_n"] = min((scores[k]["last_n"] for k in keys), default=0)
            rows.append(row)
    return rows


def summary_markdown(rows: list[dict], run_info: dict) -> str:
    last_n = sorted({r["last_n"] for r in rows})
    last = f"last-{last_n[0]}" if len(last_n) == 1 else "last-N"
    lines = [
        f"| algorithm | task | final (mean ± sample std) | final IQM [95% CI] | final optimality "
        f"gap [95% CI] | {last} mean ± sample std | {last} IQM [95% CI] | seeds | failed "
        f"| settings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        star = "*" if r.get("iqm_is_mean") else ""
        n = f" (N={r['last_n']})" if len(last_n) > 1 else ""
        lines.append(
            f"| {r['algorithm']} | {r['task']} | {r['final_mean']:.1f} ± {r['final_std']:.1f} "
            f"| {r['final_iqm']:.1f}{star} [{r['final_ci_low']:.1f}, {r['final_ci_high']:.1f}] "
            f"| {r['final_optimality_gap']:.1f} [{r['final_optimality_gap_ci_low']:.1f}, "
            f"{r['final_optimality_gap_ci_high']:.1f}] "
            f"| {r['last10_mean']:.1f} ± {r['last10_std']:.1f}{n} "
            f"| {r['last10_iqm']:.1f}{star} [{r['last10_ci_low']:.1f}, "
            f"{r['last10_ci_high']:.1f}] "
            f"| {r['seeds']} | {r['failed_seeds']} | {r.get('settings', '-')} |")
    versions = ", ".join(f"{k} {v}" for k, v in run_info.get("versions", {}).items())
    data = "; ".join(f"{task}: {_describe_data(info)}"
                     for task, info in run_info.get("data", {}).items()) or "see run.json"
    lines += [
        "",
        f"Normalized D4RL scores (0 = random, 100 = expert). ±: the sample standard deviation "
        f"over seeds (ddof=1; nan for one seed). final: last evaluation; {last}: "
        f"mean of the last {last_n[0] if len(last_n) == 1 else 'N (given per row)'} "
        f"evaluations per seed (at most {LAST_K}). IQM, optimality gap (mean shortfall below "
        f"100) and 95% CIs: rliable's definitions, stratified bootstrap over runs within tasks "
        f"(50,000 resamples). *: fewer than 4 runs, so the IQM cuts nothing and equals the mean. "
        f"failed: seeds whose losses turned non-finite; they stay in every aggregate, scored "
        f"with their last finite parameters. Probability of improvement between every pair of "
        f"algorithms: probability_of_improvement.md; performance profiles: plots/. settings: "
        f"where the row's run differs from the algorithm's reference settings (config "
        f"defaults and task table, docs/algorithms.md) and from the full profile's number of "
        f"updates, read from config.json; \"reference\": none differs; -: no config.json.",
        *(["ALGO[LEAF=VALUE]: a hyperparameter sweep's point, the algorithm with its state leaf "
           "LEAF set to VALUE after init (offrl bench --sweep)."]
          if any("[" in r["algorithm"] for r in rows) else []),
        f"Profile {run_info.get('profile')}, device {run_info.get('device')} "
        f"x{run_info.get('device_count')}, commit {run_info.get('commit')}"
        f"{' with local changes' if run_info.get('code_modified_since_commit') else ''}."
        f"{commit_note(run_info)}",
        f"Data: {data}.",
        f"Versions: {versions}.",
    ]
    return "\n".join(lines) + "\n"


def _describe_data(info: dict) -> str:
    generated = info.get("generated")
    minari = info.get("minari")
    if minari:  # a Minari id: its own environment and reference scores (run.json says which)
        return (f"Minari dataset {info.get('dataset_id')} ({info.get('path')}), "
                f"{minari['note']} (ref_min_score {minari['ref_min_score']:g}, ref_max_score "
                f"{minari['ref_max_score']:g})")
    if not generated:
        return f"{info.get('format')} file {info.get('path')}"
    recipe = generated["recipe"]
    name = info.get("dataset_id", "")
    if recipe.get("source") == "shipped":
        text = (f"{name}, generated from the shipped behaviour policies ({recipe['profile']} "
                f"profile, seed {recipe['seed']}")
    else:
        text = (f"{name + ', ' if name else ''}generated by offrl_jax ({recipe['profile']} "
                f"profile, seed {recipe['seed']}, {recipe['dataset_size']} transitions per "
                f"policy")
    stats = generated.get("statistics")
    if stats:
        text += (f"; {stats['transitions']} transitions, {stats['episodes']} episodes, "
                 f"normalized {stats['normalized_mean']:.1f} +- {stats['normalized_std']:.1f}")
    expert = generated.get("behaviour", {}).get("expert", {}).get("mean_return")
    if expert is not None:
        text += f", behaviour expert return {expert:.0f}"
    return text + ")"


def summary_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["algorithm"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_summary(run_dir: Path, reference_updates: Mapping[str, int]) -> list[dict]:
    """Every table and plot of the run in ``run_dir``; ``reference_updates``: each algorithm's
    reference budget (:func:`~offrl_jax.results.settings.differences`)."""
    run_info = json.loads((run_dir / "run.json").read_text())
    records = load_records(run_dir)
    rows = summarize(records)
    settings = run_settings(run_dir, run_info, reference_updates)
    algorithm_of = {label: algo for label, (algo, _) in labels_in_order(records).items()}
    for row in rows:
        tasks = ([row["task"]] if row["task"] != "all tasks" else
                 sorted({r["task"] for r in records if run_label(r) == row["algorithm"]}))
        row["settings"] = row_settings(settings, algorithm_of[row["algorithm"]], tasks)
    write_text_atomic(run_dir / "summary.md",
                      summary_markdown(rows, run_info) + reference_markdown(records))
    write_text_atomic(run_dir / "summary.csv", summary_csv(rows))
    write_text_atomic(run_dir / "probability_of_improvement.md",
                      improvement_markdown(records))
    write_text_atomic(run_dir / "comparison.md",
                      comparison_markdown(comparison_rows(records, run_info,
                                                          settings=settings), run_info))
    write_plots(run_dir, records, rows)
    return rows


def improvement_markdown(records: list[dict]) -> str:
    """P(row > column) [95% CI] of the final scores for every pair of algorithms (sweep points
    count as algorithms), on the tasks both have (rliable's probability of improvement)."""
    finals = final_by_task(records)
    labels = [label for label in labels_in_order(records) if label in finals]
    lines = ["| P(row > column) | " + " | ".join(labels) + " |",
             "|---" * (len(labels) + 1) + "|"]
    for x in labels:
        cells = []
        for y in labels:
            common = sorted(set(finals[x]) & set(finals[y]))
            if x == y or not common:
                cells.append("-")
                continue
            p, low, high = probability_of_improvement([finals[x][t] for t in common],
                                                      [finals[y][t] for t in common],
                                                      reps=10_000)
            cells.append(f"{p:.2f} [{low:.2f}, {high:.2f}]")
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    lines += ["", "Probability that a run of the row's algorithm scores above a run of the "
              "column's (final evaluation, Mann-Whitney U per task, averaged over the tasks both "
              "ran; a tie counts a half), with 95% stratified-bootstrap CIs (10,000 resamples)."]
    return "\n".join(lines) + "\n"
