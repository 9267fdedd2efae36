"""Names of a run's rows and files: the label of an algorithm or sweep point in tables and
plots, and the suffix of a swept run's files. Imports nothing of the suite, so that every
module of a run's files (records, tables, plots, TensorBoard logs) names rows the same way."""

from __future__ import annotations


def format_value(value: float) -> str:
    """Shortest faithful text of a swept value: ``0.5``, ``1``, ``2.5``, ``1e-05``."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def point_label(point: dict) -> str:
    """``{"penalty_coef": 0.5}`` -> ``"penalty_coef=0.5"`` (leaves joined by commas)."""
    return ",".join(f"{name}={format_value(value)}" for name, value in point.items())


def run_label(record: dict) -> str:
    """The record's row name in tables and plots: the algorithm, with its sweep point if any
    (``mopo[penalty_coef=0.5]``)."""
    point = record.get("sweep")
    return f"{record['algorithm']}[{point_label(point)}]" if point else record["algorithm"]


def sweep_suffix(sweep: dict | None) -> str:
    """File-name suffix of a swept run's records and checkpoints (``__sweep-penalty_coef``), so
    a sweep and an unswept run (or a sweep of another leaf) can share a run directory."""
    return f"__sweep-{'-'.join(sweep)}" if sweep else ""


def cell_name(algorithm: str, task: str, sweep: dict | None = None) -> str:
    """A cell's stem in the file names of a run (``records/``, ``logs/``, ``cells/``,
    checkpoints): ``ALGO__TASK`` and the sweep's suffix, if any."""
    return f"{algorithm}__{task}{sweep_suffix(sweep)}"


def commit_note(run_info: dict) -> str:
    """`` Cells trained at: COMMIT (cells); ...`` where ``run.json``'s ``trained_by_commit``
    names any commit but the run's own (a run resumed across commits, cells finished earlier);
    empty otherwise."""
    trained = run_info.get("trained_by_commit") or {}
    if not trained or set(trained) == {run_info.get("commit")}:
        return ""
    parts = [f"{commit if commit == 'not recorded' else commit[:7] + commit[40:]} "
             f"({', '.join(names)})" for commit, names in trained.items()]
    return " Cells trained at: " + "; ".join(parts) + "."
