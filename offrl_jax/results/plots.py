"""A run's plots (``plots/``): learning curves per task, the final IQM per algorithm, the
performance profile, and a one-leaf sweep's final IQM against its value."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from offrl_jax.files import atomic_output
from offrl_jax.results.labels import run_label
from offrl_jax.results.scores import final_by_task, labels_in_order
from offrl_jax.results.stats import performance_profile


def write_plots(run_dir: Path, records: list[dict], rows: list[dict]) -> None:
    """``plots/curves_TASK.png``, ``scores.png``, ``performance_profile.png`` and
    ``sweep_ALGO_LEAF.png``, from the records and the summary's rows."""
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
    finals = final_by_task(records)
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
    for label, (algo, point) in labels_in_order(records).items():
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
