"""TensorBoard event files of the scalar logs (``offrl bench --tensorboard``), written by
tensorboardX.

Beside each CSV stream ``OUT/logs/ALGO__TASK/seedS.csv`` (:func:`~offrl_jax.results.records.
write_scalar_logs`) goes the log directory ``OUT/logs/ALGO__TASK/seedS/`` (one per algorithm x
task x seed, and sweep point), so ``tensorboard --logdir OUT/logs`` shows every run while it
goes. Each evaluation interval adds at its step the CSV's columns: ``eval/normalized_score``,
``eval/failed`` (0 or 1), for an algorithm that scores a reference policy (ARMOR's pi_ref)
``eval/reference_normalized_score`` and ``eval/relative_normalized_score`` (the policy's score
minus the reference's), and ``train/METRIC`` for every metric the update returns (interval
means).

Each call that trains a cell writes one event file per stream, with tensorboardX's
``FileWriter`` (the writer under its ``SummaryWriter``): one event per step holding all of the
step's scalars, so a kill leaves every step whole or absent (``SummaryWriter.add_scalar`` would
write one event per tag, and a step cut in the middle would stay incomplete). tensorboardX
writes from a background thread, which puts each interval on disk within ``FLUSH_SECONDS``;
closing the writers at the end of the cell writes the rest. A resumed run (its records repeat
the earlier evaluations) writes only the steps after the last one already in the log directory,
read back from its event files once, so no step is logged twice; a record cut short by a kill
is cut off that file first.

tensorboardX is an optional dependency (the ``tensorboard`` extra); :func:`require` says how to
install it, and ``offrl bench --tensorboard`` calls it before training anything.
"""

from __future__ import annotations

import os
import struct
import time
from collections import defaultdict
from pathlib import Path

from offrl_jax.results.labels import cell_name
from offrl_jax.results.records import stream_name

INSTALL = 'pip install tensorboardX, or pip install -e ".[tensorboard]"'
FLUSH_SECONDS = 10
_EVENT_FILES = "events.out.tfevents.*"


class TensorBoardUnavailable(RuntimeError):
    """``--tensorboard`` without tensorboardX installed."""


def require() -> None:
    """Raise :class:`TensorBoardUnavailable`, saying how to install it, when tensorboardX is
    not installed."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise TensorBoardUnavailable(f"--tensorboard needs the tensorboardX package "
                                     f"({INSTALL})") from None


def scalars(record: dict) -> dict[str, float]:
    """``{tag: value}`` of one record (module docstring), in the CSV's order."""
    out = {"eval/failed": float(bool(record["failed"]))}
    score = record.get("normalized_score")
    if score is not None:
        out["eval/normalized_score"] = float(score)
    reference = (record.get("reference") or {}).get("normalized_score")
    if reference is not None:
        out["eval/reference_normalized_score"] = float(reference)
        if score is not None:
            out["eval/relative_normalized_score"] = float(score - reference)
    out.update({f"train/{name}": float(value)
                for name, value in sorted(record["metrics"].items()) if value is not None})
    return out


def last_step(log_dir: str | os.PathLike) -> int:
    """The last step of a scalar event in the log directory's event files (-1 for none). A file
    whose last record was cut short (a kill in the middle of a write) is truncated to its
    intact records.

    Event files are TFRecord files (TensorFlow's ``record_writer.cc``): records of ``uint64
    length | uint32 CRC of the length | an Event message | uint32 CRC of the message``."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.event_pb2 import Event

    last = -1
    for path in sorted(Path(log_dir).glob(_EVENT_FILES)):
        blob = path.read_bytes()
        position = 0
        while position + 12 <= len(blob):
            (length,) = struct.unpack_from("<Q", blob, position)
            end = position + 12 + length + 4
            if end > len(blob):
                break
            try:
                event = Event.FromString(blob[position + 12:end - 4])
            except DecodeError:
                break
            if event.HasField("summary"):
                last = max(last, event.step)
            position = end
        if position < len(blob):
            with open(path, "r+b") as handle:
                handle.truncate(position)
    return last


class TensorBoardLogs:
    """The event files of one cell: :meth:`write` after every interval with all its records so
    far, :meth:`close` when it ends (or use it as a context manager)."""

    def __init__(self, run_dir: str | os.PathLike, algo: str, task: str,
                 sweep: dict | None = None):
        require()
        self.folder = Path(run_dir) / "logs" / cell_name(algo, task, sweep)
        self._writers: dict = {}  # stream name -> tensorboardX.FileWriter
        self._last: dict[str, int] = {}  # stream name -> last step written

    def write(self, records: list[dict]) -> None:
        """Log the steps of ``records`` after each stream's last logged step."""
        from tensorboardX import FileWriter
        from tensorboardX.proto.summary_pb2 import Summary

        streams: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
        for r in records:
            streams[stream_name(r)].append((int(r["step"]), scalars(r)))
        now = time.time()
        for name, rows in streams.items():
            log_dir = self.folder / name
            if name not in self._last:
                self._last[name] = last_step(log_dir)
            new = sorted((row for row in rows if row[0] > self._last[name]),
                         key=lambda row: row[0])
            if not new:
                continue
            writer = self._writers.get(name)
            if writer is None:
                # tensorboardX names a file by the second and the host; the first step, padded,
                # orders the files of one second as their steps (TensorBoard drops the events
                # after a step that goes back). A file of the same name holds no whole step.
                writer = self._writers[name] = FileWriter(
                    str(log_dir), flush_secs=FLUSH_SECONDS,
                    filename_suffix=f".{new[0][0]:012d}")
            for step, values in new:
                summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)
                                         for tag, value in values.items()])
                writer.add_summary(summary, step, now)
            self._last[name] = new[-1][0]

    def close(self) -> None:
        """Write every pending event and close the files."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self) -> TensorBoardLogs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
