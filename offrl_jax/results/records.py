"""A run's per-seed evaluation records and their scalar logs.

``records/ALGO__TASK[__sweep-LEAF].jsonl``: one JSON line per row (seed, sweep point) per
evaluation, rewritten atomically after each interval; ``logs/ALGO__TASK[__sweep-LEAF]/`` the
same evaluations as one CSV stream per row (:func:`write_scalar_logs`), and with ``offrl bench
--tensorboard`` as TensorBoard event files (:mod:`offrl_jax.results.tensorboard`).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

from offrl_jax.files import write_text_atomic
from offrl_jax.results.labels import cell_name, format_value


def records_path(run_dir: Path, algo: str, task: str, sweep: dict | None = None) -> Path:
    return run_dir / "records" / f"{cell_name(algo, task, sweep)}.jsonl"


def write_records(run_dir: Path, algo: str, task: str, records: list[dict],
                  sweep: dict | None = None) -> None:
    lines = [json.dumps({"algorithm": algo, "task": task, **r}) for r in records]
    write_text_atomic(records_path(run_dir, algo, task, sweep), "\n".join(lines) + "\n")


def load_records(run_dir: Path) -> list[dict]:
    out = []
    for path in sorted((run_dir / "records").glob("*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


def stream_name(record: dict) -> str:
    """The record's stream in ``logs/``: ``seedS`` and its sweep point (``seed0_LEAF=V``)."""
    point = "".join(f"_{k}={format_value(v)}" for k, v in (record.get("sweep") or {}).items())
    return f"seed{record['seed']}{point}"


def write_scalar_logs(run_dir: Path, algo: str, task: str, records: list[dict],
                      sweep: dict | None = None) -> list[Path]:
    """``OUT/logs/ALGO__TASK[__sweep-...]/seedS[_LEAF=V].csv``: one stream per row (seed, sweep
    point), one line per evaluation interval: the step, the score, whether the row has failed,
    and every metric the update returns (interval means), for a CSV reader or a plot while a
    long run goes on. Rewritten atomically after each interval."""
    folder = run_dir / "logs" / cell_name(algo, task, sweep)
    streams: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        streams[stream_name(r)].append(r)
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
