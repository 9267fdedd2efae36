"""The comparison table of a run (``comparison.md``): each algorithm's score on a task beside
what the same data gives without learning anything beyond it (BC trained in the same run, and
the dataset's own mean return) and beside the score its paper published on D4RL.

Per task, one row per algorithm (sweep points count as algorithms):

* the updates it reached, against the updates planned where the run says (a cell cut short,
  by a time budget or a kill, shows its last evaluated step);
* its final score (mean ± std over seeds) and the mean of its last evaluations;
* against BC of the same run on the same task: the difference of the final means and the
  probability of improvement P(algorithm > BC) with its 95% bootstrap CI
  (:func:`offrl_jax.results.stats.probability_of_improvement`);
* the dataset's normalized mean return (generated data records it; ``run.json``);
* the published score (:mod:`offrl_jax.results.published`), which comes from the D4RL
  datasets and the paper's own budget (usually 1M updates or more, and other seeds): a
  reference point for the order of magnitude, not a target the row must hit;
* a public implementation's re-run on D4RL v2 (CORL, OfflineRL-Kit), read in its README: the
  same kind of reference, checked here and on one version of the data;
* where the records hold a measured peer of the row (``d3rlpy-ALGO``, written by
  ``benchmarks/peer_d3rlpy.py`` on the same data file, budget, seeds and evaluation episodes):
  the peer's final score and P(row > peer) with its 95% bootstrap CI. Those columns appear in
  a task's table only when some row has a peer.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from offrl_jax.results.labels import commit_note, run_label
from offrl_jax.results.published import (
    REFERENCE_SOURCES,
    SOURCES,
    published_score,
    reference_score,
)
from offrl_jax.results.settings import row_settings, sample_std
from offrl_jax.results.stats import LAST_K, probability_of_improvement

BASELINE = "bc"
PEER_PREFIX = "d3rlpy-"


def _planned_updates(run_info: dict) -> dict[str, int]:
    """``{algorithm: num_updates}`` from ``run.json``'s ``train`` (a run) or from every merged
    run's (``offrl report``)."""
    out: dict[str, int] = {}
    sources = [run_info] + list(run_info.get("merged_from", {}).values())
    for source in sources:
        for algo, train in (source.get("train") or {}).items():
            if isinstance(train, dict) and "num_updates" in train:
                out.setdefault(algo, int(train["num_updates"]))
    return out


def dataset_mean(run_info: dict, task: str) -> float | None:
    """The normalized mean return of the task's data, where ``run.json`` records it (the
    suite's generated data does); None for files that carry no statistics."""
    info = run_info.get("data", {}).get(task, {})
    stats = (info.get("generated") or {}).get("statistics") or {}
    value = stats.get("normalized_mean")
    return None if value is None else float(value)


def comparison_rows(records: list[dict], run_info: dict, last_k: int | None = None,
                    settings: dict | None = None) -> list[dict]:
    """One dict per (task, algorithm label), tasks sorted, algorithms in label order; see the
    module's docstring for the columns. ``settings``: :func:`~offrl_jax.results.settings.
    run_settings` of the run (None: unknown)."""
    last_k = LAST_K if last_k is None else last_k

    curves: dict[tuple[str, str], dict[int, list[tuple[int, float]]]] = defaultdict(
        lambda: defaultdict(list))
    algorithm_of: dict[str, str] = {}
    for r in records:
        label = run_label(r)
        algorithm_of[label] = r["algorithm"]
        if r["normalized_score"] is not None:
            curves[(label, r["task"])][r["seed"]].append((r["step"], r["normalized_score"]))
    planned = _planned_updates(run_info)
    rows = []
    for task in sorted({task for _, task in curves}):
        finals = {}
        for (label, t), seeds in curves.items():
            if t == task:
                finals[label] = {s: sorted(v) for s, v in seeds.items()}
        baseline = finals.get(BASELINE)
        base_final = (np.array([v[-1][1] for v in baseline.values()])
                      if baseline else None)
        for label in sorted(finals, key=lambda x: (x != BASELINE, x)):
            seeds = finals[label]
            final = np.array([v[-1][1] for v in seeds.values()])
            last = np.array([np.mean([x for _, x in v[-last_k:]]) for v in seeds.values()])
            row = {
                "task": task, "algorithm": label, "seeds": len(seeds),
                "updates": min(v[-1][0] for v in seeds.values()),
                "planned": planned.get(algorithm_of[label]),
                "final_mean": float(final.mean()), "final_std": sample_std(final),
                "last_mean": float(last.mean()),
                "last_n": min(min(len(v), last_k) for v in seeds.values()),
                "dataset_mean": dataset_mean(run_info, task),
                "published": published_score(algorithm_of[label], task),
                "reference": reference_score(algorithm_of[label], task),
                "vs_bc": None, "p_over_bc": None, "peer": None, "p_over_peer": None,
                "settings": row_settings(settings or {}, algorithm_of[label], [task]),
            }
            if base_final is not None and label != BASELINE:
                row["vs_bc"] = float(final.mean() - base_final.mean())
                row["p_over_bc"] = probability_of_improvement([final], [base_final],
                                                              reps=10_000)
            peer = finals.get(PEER_PREFIX + label)
            if peer is not None and not label.startswith(PEER_PREFIX):
                peer_final = np.array([v[-1][1] for v in peer.values()])
                row["peer"] = (float(peer_final.mean()), sample_std(peer_final),
                               len(peer_final), min(v[-1][0] for v in peer.values()))
                row["p_over_peer"] = probability_of_improvement([final], [peer_final],
                                                                reps=10_000)
            rows.append(row)
    return rows


def _updates(row: dict) -> str:
    reached = f"{row['updates'] / 1000:g}k"
    if row["planned"] and row["planned"] != row["updates"]:
        return f"{reached} of {row['planned'] / 1000:g}k"
    return reached


def comparison_markdown(rows: list[dict], run_info: dict) -> str:
    """The rows as one Markdown table per task, with the notes that say how to read them."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        mean = task_rows[0]["dataset_mean"]
        peers = any(r.get("peer") for r in task_rows)
        lines += [f"### {task}", "",
                  f"Dataset mean (normalized return of its episodes): "
                  f"{'unknown' if mean is None else f'{mean:.1f}'}.", "",
                  "| algorithm | seeds | updates | final (mean ± sample std) | last-N mean (N) "
                  "| final − BC | P(> BC) [95% CI] | final − dataset mean | published "
                  "(D4RL, paper's budget) | public re-run (D4RL v2) | "
                  + ("measured peer (d3rlpy, same data): final (seeds, updates) | "
                     "P(> peer) [95% CI] | " if peers else "") + "settings |",
                  "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if peers
                                                                        else "")]
        for r in task_rows:
            p = r["p_over_bc"]
            vs_bc = "-" if r["vs_bc"] is None else f"{r['vs_bc']:+.1f}"
            p_text = "-" if p is None else f"{p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]"
            vs_data = "-" if mean is None else f"{r['final_mean'] - mean:+.1f}"
            paper, rerun = (
                "-" if ref is None else f"{ref[0]:.1f} [{ref[1]}]"
                for ref in (r["published"], r["reference"]))
            peer_cells = ""
            if peers:
                peer, p_peer = r.get("peer"), r.get("p_over_peer")
                peer_cells = ("- | - | " if peer is None else
                              f"{peer[0]:.1f} ± {peer[1]:.1f} ({peer[2]}, "
                              f"{peer[3] / 1000:g}k) | {p_peer[0]:.2f} [{p_peer[1]:.2f}, "
                              f"{p_peer[2]:.2f}] | ")
            lines.append(
                f"| {r['algorithm']} | {r['seeds']} | {_updates(r)} "
                f"| {r['final_mean']:.1f} ± {r['final_std']:.1f} "
                f"| {r['last_mean']:.1f} ({r['last_n']}) | {vs_bc} | {p_text} | {vs_data} "
                f"| {paper} | {rerun} | {peer_cells}{r.get('settings', '-')} |")
        lines.append("")
    lines += [
        "Normalized scores (0 = random, 100 = expert). ±: the sample standard deviation over "
        "seeds (ddof=1; nan for one seed). final: the last evaluation of each seed; "
        "last-N: the mean of each seed's last N evaluations (at most 10). updates: the last "
        "evaluated step, \"of\" the planned number where a cell stopped early. final − BC and "
        "P(> BC): against the BC rows of this table, on the same data (P: probability that a "
        "seed of the row scores above a seed of BC, Mann-Whitney U, 95% bootstrap CI over "
        "seeds, 10,000 resamples). published: the paper's D4RL score ([source] below, from "
        "offrl_jax/results/published.py), on D4RL's own datasets, with the paper's budget "
        "(usually 1M updates or more) and seeds: a different experiment, shown for the order "
        "of magnitude, not a target this run must reach. public re-run: the same algorithm "
        "re-run by a public implementation on D4RL v2 at its own budget, read in its README "
        "([source] below): a second, checked reference for the same order of magnitude. "
        "settings: where the row's run differs from the algorithm's reference settings (its "
        "config defaults and task table, docs/algorithms.md) and from the full profile's "
        "number of updates, from config.json (profile and --set overrides applied); "
        "\"reference\": none differs; -: no config.json.",
    ]
    if any(r.get("peer") for r in rows):
        lines.append(
            "measured peer: d3rlpy's implementation of the same algorithm (rows d3rlpy-ALGO, "
            "benchmarks/peer_d3rlpy.py) trained on the same data file with the same seeds "
            "count, budget and evaluation episodes; its settings and what it cannot match are "
            "in its config.json. P(> peer): probability that a seed of the row scores above a "
            "seed of the peer, 95% bootstrap CI over seeds.")
    for title, column, sources in (("Published sources", "published", SOURCES),
                                   ("Re-run sources", "reference", REFERENCE_SOURCES)):
        keys = dict.fromkeys(r[column][1] for r in rows if r[column])
        if keys:
            lines.append(f"{title}: " + "; ".join(f"[{k}] {sources[k]}" for k in keys) + ".")
    lines.append(f"Profile {run_info.get('profile')}, device {run_info.get('device')}, commit "
                 f"{run_info.get('commit')}.{commit_note(run_info)}")
    return "\n".join(lines) + "\n"
