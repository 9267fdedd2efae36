"""Result files: per-seed evaluation records (JSON lines), summary tables, plots, provenance.

Layout of a run directory::

    run.json                  provenance: command, profile, device, versions, commit, time
    records/ALGO__TASK.jsonl  one line per seed per evaluation (atomically rewritten)
    cells/ALGO__TASK.json     what the cell ran, where and when (offrl_jax.training.cells)
    summary.md, summary.csv   normalized scores per algorithm and task
    comparison.md             each algorithm beside BC, the dataset's mean and its paper's score
    plots/curves_TASK.png     learning curves, plots/scores.png the bar chart

A hyperparameter sweep (records with ``"sweep": {leaf: value}``) writes
``records/ALGO__TASK__sweep-LEAF.jsonl``; each sweep point is an algorithm of its own in the
tables and plots, labelled ``ALGO[LEAF=VALUE]`` (e.g. ``mopo[penalty_coef=2.5]``), the CSV gets a
column per swept leaf, and ``plots/sweep_ALGO_LEAF.png`` draws the final IQM against the value.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import platform
import subprocess
from collections import defaultdict
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from offrl_jax.data._io import atomic_output
from offrl_jax.results.compare import comparison_markdown, comparison_rows
from offrl_jax.results.labels import cell_name, commit_note, format_value, run_label
from offrl_jax.results.relative import reference_markdown
from offrl_jax.results.settings import row_settings, run_settings, sample_std
from offrl_jax.results.stats import (
    LAST_K,
    aggregate,
    iqm_is_mean,
    performance_profile,
    probability_of_improvement,
)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


LIBRARIES = ("offrl_jax", "jax", "jaxlib", "flax", "optax", "mujoco", "mujoco-mjx", "gymnasium",
             "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the numbers ("unknown" when absent)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def git_commit() -> tuple[str, bool | None]:
    """``(commit, code modified since it)`` of the package's checkout (``"unknown"``, None
    outside a git checkout)."""
    try:
        git = dict(capture_output=True, text=True, cwd=Path(__file__).parent, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout.strip()
        # Tracked files edited since that commit: the run's code is not exactly the commit's.
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                     "--", str(Path(__file__).parents[1])], **git).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None


@functools.cache
def process_commit() -> tuple[str, bool | None]:
    """:func:`git_commit` as this process first saw it: the code it imported, though the
    checkout may be committed to while a long run goes on."""
    return git_commit()


def training_commits(run_dir: Path) -> dict[str, list[str]]:
    """``{commit: [cell names]}``: the commits whose code trained each cell of ``run_dir``, from
    the invocations in ``cells/*.json`` that trained updates or did not record how many
    (``"not recorded"`` for calls made before invocations carried their commit; ``+changes``
    marks code modified since it)."""
    out: dict[str, list[str]] = {}
    for path in sorted((Path(run_dir) / "cells").glob("*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for call in info.get("invocations") or []:
            if call.get("updates") == 0:  # None: a call from before updates were recorded
                continue
            commit = call.get("commit") or "not recorded"
            commit += "+changes" if call.get("code_modified") else ""
            names = out.setdefault(commit, [])
            if path.stem not in names:
                names.append(path.stem)
    return out


def device_description() -> str:
    """``gpu (NVIDIA H200)``, or on a CPU its model: ``cpu (AMD EPYC)``."""
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", "") or ""
    if device.platform == "cpu":
        kind = platform.processor() or platform.machine() or kind
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    kind = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return f"{device.platform} ({kind})"


def provenance(profile: str, argv: list[str] | None = None) -> dict:
    import jax

    commit, dirty = process_commit()
    return {
        "profile": profile, "argv": argv or [], "commit": commit,
        "code_modified_since_commit": dirty, "versions": library_versions(),
        "device": device_description(),
        "device_count": jax.device_count(), "python": platform.python_version(),
        "host": platform.node(),
    }


def records_path(run_dir: Path, algo: str, task: str, sweep: dict | None = None) -> Path:
    return run_dir / "records" / f"{cell_name(algo, task, sweep)}.jsonl"


def write_records(run_dir: Path, algo: str, task: str, records: list[dict],
                  sweep: dict | None = None) -> None:
    lines = [json.dumps({"algorithm": algo, "task": task, **r}) for r in records]
    write_text_atomic(records_path(run_dir, algo, task, sweep), "\n".join(lines) + "\n")


def write_scalar_logs(run_dir: Path, algo: str, task: str, records: list[dict],
                      sweep: dict | None = None) -> list[Path]:
    """``OUT/logs/ALGO__TASK[__sweep-...]/seedS[_LEAF=V].csv``: one stream per row (seed, sweep
    point), one line per evaluation interval: the step, the score, whether the row has failed,
    and every metric the update returns (interval means), for a CSV reader or a plot while a
    long run goes on. Rewritten atomically after each interval."""
    folder = run_dir / "logs" / cell_name(algo, task, sweep)
    streams: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        point = "".join(f"_{k}={format_value(v)}" for k, v in (r.get("sweep") or {}).items())
        streams[f"seed{r['seed']}{point}"].append(r)
    paths = []
    for name, rows in streams.items():
        metrics = sorted({k for r in rows for k in r["metrics"]})
        # A reference policy scored beside the policy (ARMOR's pi_ref): its score and the
        # paired difference, after the policy's own score.
        scored_reference = any("reference" in r for r in rows)
        reference_columns = (["reference_normalized_score", "relative_normalized_score"]
                             if scored_reference else [])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["step", "normalized_score", *reference_columns, "failed", *metrics])
        for r in rows:
            reference = []
            if scored_reference:
                ref = (r.get("reference") or {}).get("normalized_score")
                own = r["normalized_score"]
                reference = [ref, None if ref is None or own is None else own - ref]
            writer.writerow([r["step"], r["normalized_score"], *reference, int(r["failed"]),
                             *(r["metrics"].get(k) for k in metrics)])
        path = folder / f"{name}.csv"
        write_text_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def load_records(run_dir: Path) -> list[dict]:
    out = []
    for path in sorted((run_dir / "records").glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


def seed_scores(records: list[dict]) -> dict[tuple[str, str], dict[str, dict[int, float]]]:
    """``{(label, task): {"final": {seed: score}, "last10": {seed: score}, "failed": set}}``,
    ``label`` from :func:`run_label` (the algorithm, or ``ALGO[LEAF=VALUE]`` in a sweep).

    "final" is the last evaluation, "last10" the mean of the last 10 evaluations. Seeds that
    failed (non-finite losses) are listed under "failed" and counted in both like every other
    seed: the training loop keeps their last finite parameters and evaluates them at every
    later evaluation (a method that diverges often must not look better than it is). Only an
    evaluation without a score (records of older runs, or a non-finite evaluation) is left out.
    """
    by_run = defaultdict(lambda: defaultdict(list))
    failed = defaultdict(set)
    for r in records:
        key = (run_label(r), r["task"])
        if r["failed"]:
            failed[key].add(r["seed"])
        if r["normalized_score"] is not None:
            by_run[key][r["seed"]].append((r["step"], r["normalized_score"]))
    out = {}
    for key in set(by_run) | set(failed):
        seeds = {s: sorted(v) for s, v in by_run[key].items()}
        out[key] = {
            "final": {s: v[-1][1] for s, v in seeds.items()},
            "last10": {s: float(np.mean([x for _, x in v[-LAST_K:]])) for s, v in seeds.items()},
            "last_n": min((min(len(v), LAST_K) for v in seeds.values()), default=0),
            "failed": failed[key],
        }
    return out


def _labels_in_order(records: list[dict]) -> dict[str, tuple[str, dict]]:
    """``{label: (algorithm, sweep point)}`` sorted by algorithm, then by the swept values as
    numbers (``penalty_coef=2.5`` before ``penalty_coef=10``); an unswept run first."""
    runs = {run_label(r): (r["algorithm"], r.get("sweep") or {}) for r in records}
    return dict(sorted(runs.items(), key=lambda item: (item[1][0], tuple(item[1][1].items()))))


_STAT_COLUMNS = ("mean", "std", "iqm", "ci_low", "ci_high", "median", "median_ci_low",
                 "median_ci_high", "mean_ci_low", "mean_ci_high", "optimality_gap",
                 "optimality_gap_ci_low", "optimality_gap_ci_high")


def summarize(records: list[dict]) -> list[dict]:
    """One row per (algorithm, task) plus an "all tasks" row per algorithm; each sweep point
    is an algorithm of its own (:func:`run_label`). When the records hold a sweep, every row
    also has a column per swept leaf (its value, or None for rows without it)."""
    scores = seed_scores(records)
    labels = _labels_in_order(records)
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


def write_summary(run_dir: Path) -> list[dict]:
    run_info = json.loads((run_dir / "run.json").read_text())
    records = load_records(run_dir)
    rows = summarize(records)
    settings = run_settings(run_dir, run_info)
    algorithm_of = {label: algo for label, (algo, _) in _labels_in_order(records).items()}
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


def _final_by_task(records: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """``{label: {task: final scores of its runs}}``."""
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for (label, task), scores in seed_scores(records).items():
        if scores["final"]:
            out[label][task] = np.array(list(scores["final"].values()))
    return out


def improvement_markdown(records: list[dict]) -> str:
    """P(row > column) [95% CI] of the final scores for every pair of algorithms (sweep points
    count as algorithms), on the tasks both have (rliable's probability of improvement)."""
    finals = _final_by_task(records)
    labels = [label for label in _labels_in_order(records) if label in finals]
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


def write_plots(run_dir: Path, records: list[dict], rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    curves = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        if r["normalized_score"] is not None:
            curves[r["task"]][run_label(r)][r["step"]].append(r["normalized_score"])
    for task, by_algo in curves.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for algo, by_step in sorted(by_algo.items()):
            steps = np.array(sorted(by_step))
            mean = np.array([np.mean(by_step[s]) for s in steps])
            std = np.array([np.std(by_step[s]) for s in steps])
            ax.plot(steps, mean, label=algo)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=task, xlabel="updates", ylabel="normalized score")
        ax.legend()
        fig.tight_layout()
        _save_figure(fig, plots / f"curves_{task}.png")
        plt.close(fig)
    overall = [r for r in rows if r["task"] == "all tasks"]
    if overall:
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(overall)), 4))
        names = [r["algorithm"] for r in overall]
        values = [r["final_iqm"] for r in overall]
        errors = np.array([[r["final_iqm"] - r["final_ci_low"], r["final_ci_high"] -
                            r["final_iqm"]] for r in overall]).T
        ax.bar(names, values, yerr=errors, capsize=4)
        ax.set(ylabel="normalized score (IQM, 95% CI)", title="all tasks, final evaluation")
        if max(len(name) for name in names) > 8:  # sweep labels: mopo[penalty_coef=2.5]
            ax.tick_params(axis="x", labelrotation=30)
            plt.setp(ax.get_xticklabels(), ha="right")
        fig.tight_layout()
        _save_figure(fig, plots / "scores.png")
        plt.close(fig)
    finals = _final_by_task(records)
    if finals:
        taus = np.linspace(-10, 120, 131)
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, by_task in finals.items():
            fraction, low, high = performance_profile(list(by_task.values()), taus)
            ax.plot(taus, fraction, label=label)
            ax.fill_between(taus, low, high, alpha=0.15)
        ax.set(xlabel="normalized score tau", ylabel="fraction of runs with score > tau",
               title="performance profile, final evaluation, all tasks")
        ax.legend(fontsize="small")
        fig.tight_layout()
        _save_figure(fig, plots / "performance_profile.png")
        plt.close(fig)
    _plot_sweeps(plt, plots, records, rows)


def _plot_sweeps(plt, plots: Path, records: list[dict], rows: list[dict]) -> None:
    """``sweep_ALGO_LEAF.png``: final IQM [95% CI] against the value of a one-leaf sweep, one
    line per task and one for all tasks when there are several (a grid of several leaves has
    no such plot: read its table)."""
    by_sweep = defaultdict(list)  # (algorithm, leaf) -> [(value, label)]
    for label, (algo, point) in _labels_in_order(records).items():
        if len(point) == 1:
            (leaf, value), = point.items()
            by_sweep[(algo, leaf)].append((value, label))
    for (algo, leaf), points in by_sweep.items():
        if len(points) < 2:
            continue
        values = np.array([v for v, _ in points])
        fig, ax = plt.subplots(figsize=(6, 4))
        tasks = list(dict.fromkeys(r["task"] for r in rows if r["task"] != "all tasks"))
        for task in tasks + (["all tasks"] if len(tasks) > 1 else []):
            found = {r["algorithm"]: r for r in rows if r["task"] == task}
            line = [(v, found[label]) for v, label in points if label in found]
            if not line:
                continue
            x = np.array([v for v, _ in line])
            iqms = np.array([r["final_iqm"] for _, r in line])
            errors = np.array([[r["final_iqm"] - r["final_ci_low"],
                                r["final_ci_high"] - r["final_iqm"]] for _, r in line]).T
            ax.errorbar(x, iqms, yerr=errors, marker="o", capsize=4, label=task)
        if values.min() > 0 and values.max() >= 10 * values.min():
            ax.set_xscale("log")
        ax.set(title=f"{algo}: final evaluation against {leaf}", xlabel=leaf,
               ylabel="normalized score (IQM, 95% CI)")
        ax.legend()
        fig.tight_layout()
        _save_figure(fig, plots / f"sweep_{algo}_{leaf}.png")
        plt.close(fig)


def _save_figure(fig, path: Path) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
