"""TensorBoard event files of the scalar logs, written without TensorFlow, TensorBoard or protobuf.

``offrl bench --tensorboard`` writes, beside each CSV stream ``OUT/logs/ALGO__TASK/seedS.csv``,
the log directory ``OUT/logs/ALGO__TASK/seedS/`` (one per algorithm x task x seed, and sweep
point) with one event file, so ``tensorboard --logdir OUT/logs`` shows every run while it goes.
Each evaluation interval is one event at its step, with the tags ``eval/normalized_score``,
``eval/failed`` (0 or 1) and ``train/METRIC`` for every metric the update returns (interval
means), the CSV's columns.

The format, from TensorBoard's ``event.proto`` and ``summary.proto`` and TensorFlow's record
framing (``tensorflow/core/lib/io/record_writer.cc``, the TFRecord format): a file is records

    uint64 length | uint32 masked_crc(length) | data (length bytes) | uint32 masked_crc(data)

little-endian, ``masked_crc(x) = ((c >> 15 | c << 17) + 0xa282ead8) mod 2**32`` with ``c`` the
CRC-32C (Castagnoli) of ``x``. Each data is an ``Event`` message: ``wall_time`` (field 1,
double), ``step`` (2, int64), ``file_version`` (3, string; the first event says
``brain.Event:2``) or ``summary`` (5, a ``Summary``: repeated ``value`` (1), each with ``tag``
(1, string) and ``simple_value`` (2, float), which TensorBoard shows as a scalar). Only these
fields are written; :func:`read_events` reads them back (and skips any other field).

Files are only appended to, so a TensorBoard that is reading one sees each new interval. A
resumed run appends the intervals after the last step already in the file (a resumed run's
records repeat the earlier ones bit for bit); a record cut short by a kill is truncated away
first.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections import defaultdict
from pathlib import Path

from offrl_jax.results.labels import cell_name, format_value

FILE_VERSION = "brain.Event:2"
_PREFIX = "events.out.tfevents."


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC (a CRC of data that holds CRCs is not a plain CRC)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord record holding ``data``."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative numbers
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    """An ``Event`` message: the file-version header, or a summary of scalar values."""
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode())
                              + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in scalars.items())
        out += _length_delimited(5, summary)
    return out


def _fields(data: bytes):
    """``(field, wire_type, value)`` of a protobuf message: ints for varints, bytes for the
    others (8 bytes for doubles, 4 for floats, the payload for length-delimited fields)."""
    position = 0

    def varint():
        nonlocal position
        value = shift = 0
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, wire, varint()
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield field, wire, data[position:position + size]
            position += size
        elif wire == 2:
            size = varint()
            yield field, wire, data[position:position + size]
            position += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")


def decode_event(data: bytes) -> dict:
    """``{"wall_time", "step", "file_version" (or None), "scalars": {tag: value}}``."""
    event = {"wall_time": None, "step": 0, "file_version": None, "scalars": {}}
    for field, _, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for summary_field, _, entry in _fields(value):
                if summary_field != 1:
                    continue
                tag, number = None, None
                for value_field, _, item in _fields(entry):
                    if value_field == 1:
                        tag = item.decode()
                    elif value_field == 2:
                        number = struct.unpack("<f", item)[0]
                if tag is not None and number is not None:
                    event["scalars"][tag] = number
    return event


def read_records(path: str | os.PathLike) -> tuple[list[bytes], int]:
    """The intact records of a TFRecord file and the offset where they end; reading stops at
    the first record that is cut short or whose CRCs do not match (what a kill leaves)."""
    blob = Path(path).read_bytes()
    records, position = [], 0
    while position + 12 <= len(blob):
        length_bytes = blob[position:position + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", blob[position + 8:position + 12])
        end = position + 12 + length + 4
        if length_crc != masked_crc32c(length_bytes) or end > len(blob):
            break
        data = blob[position + 12:position + 12 + length]
        if struct.unpack("<I", blob[end - 4:end])[0] != masked_crc32c(data):
            break
        records.append(data)
        position = end
    return records, position


def read_events(path: str | os.PathLike) -> list[dict]:
    """Every intact event of an event file, in order (:func:`decode_event`)."""
    return [decode_event(record) for record in read_records(path)[0]]


def event_files(log_dir: str | os.PathLike) -> list[Path]:
    """The event files of a log directory, oldest first (their names carry their start)."""
    return sorted(Path(log_dir).glob(_PREFIX + "*"))


# (file, size after our last append) -> last step in it, so an interval does not re-read the
# whole file; any other size (another process, a truncation) re-reads it.
_LAST_STEP: dict[tuple[Path, int], int] = {}


def append_scalars(log_dir: str | os.PathLike, rows: list[tuple[int, dict[str, float]]]
                   ) -> Path:
    """Append one event per ``(step, {tag: value})`` whose step is after the last step in the
    log directory's newest event file (made, with its header, when there is none); returns
    that file. A damaged tail (a record cut short) is cut off first."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    files = event_files(log_dir)
    if files:
        path = files[-1]
        size = path.stat().st_size
        last = _LAST_STEP.get((path, size))
        if last is None:
            records, end = read_records(path)
            if end < size:
                with open(path, "r+b") as handle:
                    handle.truncate(end)
                size = end
            steps = [event["step"] for event in map(decode_event, records) if event["scalars"]]
            last = max(steps, default=-1)
            for other in files[:-1]:
                last = max([last, *(e["step"] for e in read_events(other) if e["scalars"])])
        if not _after(rows, last):
            _LAST_STEP[(path, size)] = last
            return path
        header = b""
    else:
        path = log_dir / f"{_PREFIX}{int(time.time())}.{socket.gethostname()}.offrl"
        header = frame(encode_event(time.time(), 0, file_version=FILE_VERSION))
        last = -1
    now = time.time()
    new = _after(rows, last)
    blob = header + b"".join(frame(encode_event(now, step, scalars=scalars))
                             for step, scalars in new)
    with open(path, "ab") as handle:
        handle.write(blob)
        handle.flush()
    last = max([last, *(step for step, _ in new)])
    _LAST_STEP[(path, path.stat().st_size)] = last
    return path


def _after(rows: list[tuple[int, dict[str, float]]], last: int):
    return [(step, scalars) for step, scalars in rows if step > last]


def write_tensorboard_logs(run_dir: Path, algo: str, task: str, records: list[dict],
                           sweep: dict | None = None) -> list[Path]:
    """``OUT/logs/ALGO__TASK[__sweep-...]/seedS[_LEAF=V]/events.out.tfevents.*``: the streams
    of :func:`~offrl_jax.results.report.write_scalar_logs` as TensorBoard event files (module
    docstring); called after each interval with all records so far."""
    folder = Path(run_dir) / "logs" / cell_name(algo, task, sweep)
    streams: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
    for r in records:
        point = "".join(f"_{k}={format_value(v)}" for k, v in (r.get("sweep") or {}).items())
        scalars = {"eval/failed": float(bool(r["failed"]))}
        if r.get("normalized_score") is not None:
            scalars["eval/normalized_score"] = float(r["normalized_score"])
        reference = (r.get("reference") or {}).get("normalized_score")
        if reference is not None:
            scalars["eval/reference_normalized_score"] = float(reference)
            if r.get("normalized_score") is not None:
                scalars["eval/relative_normalized_score"] = float(r["normalized_score"]
                                                                  - reference)
        scalars.update({f"train/{name}": float(value)
                        for name, value in sorted(r["metrics"].items()) if value is not None})
        streams[f"seed{r['seed']}{point}"].append((int(r["step"]), scalars))
    return [append_scalars(folder / name, sorted(rows, key=lambda row: row[0]))
            for name, rows in streams.items()]
