"""TensorBoard event files written by the suite's own writer (``offrl bench --tensorboard``).

The format is checked three ways: published CRC-32C test vectors and hand-encoded protobuf
bytes (here, always), our reader, and, where the ``tensorboard`` package is installed,
TensorBoard's own reader (which verifies both CRCs of every record).
"""

import json
import struct

import numpy as np
import pytest

from offrl_jax.results.tensorboard import (
    FILE_VERSION,
    append_scalars,
    crc32c,
    encode_event,
    event_files,
    frame,
    masked_crc32c,
    read_events,
)


def test_crc32c_matches_published_vectors():
    # RFC 3720 (iSCSI), appendix B.4, and the usual check value of CRC-32C.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0
    # TFRecord's mask: rotate right by 15 bits, add 0xa282ead8.
    assert masked_crc32c(b"") == 0xA282EAD8
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == \
        (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_event_bytes_are_the_protobuf_encoding():
    value = b"\x0a\x01a" + b"\x15" + struct.pack("<f", 1.0)  # tag "a", simple_value 1.0
    summary = b"\x0a" + bytes([len(value)]) + value
    expected = (b"\x09" + struct.pack("<d", 2.5) + b"\x10\x96\x01"  # wall_time, step 150
                + b"\x2a" + bytes([len(summary)]) + summary)
    assert encode_event(2.5, 150, scalars={"a": 1.0}) == expected
    header = encode_event(0.0, 0, file_version=FILE_VERSION)
    assert header.endswith(b"\x1a\x0dbrain.Event:2")
    record = frame(expected)
    assert record[:8] == struct.pack("<Q", len(expected))
    assert record[8:12] == struct.pack("<I", masked_crc32c(record[:8]))
    assert record[12:-4] == expected
    assert record[-4:] == struct.pack("<I", masked_crc32c(expected))


def test_append_only_resumable_and_a_cut_record_is_dropped(tmp_path):
    log_dir = tmp_path / "seed0"
    first = [(10, {"eval/normalized_score": 1.5, "train/loss": 0.25})]
    path = append_scalars(log_dir, first)
    before = path.read_bytes()
    # All records so far are passed each time; only the new steps are appended.
    append_scalars(log_dir, first + [(20, {"eval/normalized_score": -3.0,
                                           "train/loss": float("nan")})])
    assert path.read_bytes().startswith(before) and event_files(log_dir) == [path]
    events = read_events(path)
    assert events[0]["file_version"] == FILE_VERSION and events[0]["scalars"] == {}
    assert [e["step"] for e in events[1:]] == [10, 20]
    assert events[1]["scalars"] == {"eval/normalized_score": 1.5, "train/loss": 0.25}
    assert events[2]["scalars"]["eval/normalized_score"] == -3.0
    assert np.isnan(events[2]["scalars"]["train/loss"])
    # A kill in the middle of a write leaves a cut record: it is cut off, then rewritten.
    whole = path.read_bytes()
    path.write_bytes(whole[:-5])
    assert [e["step"] for e in read_events(path)] == [0, 10]
    rows = first + [(20, {"eval/normalized_score": -3.0}), (30, {"eval/normalized_score": 4.0})]
    append_scalars(log_dir, rows)
    assert [e["step"] for e in read_events(path)] == [0, 10, 20, 30]


def test_tensorboard_reads_the_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow

    rng = np.random.default_rng(0)
    for _ in range(20):
        blob = rng.bytes(int(rng.integers(0, 300)))
        assert masked_crc32c(blob) == pywrap_tensorflow.masked_crc32c(blob)
    log_dir = tmp_path / "seed3"
    rows = [(step, {"eval/normalized_score": float(step) / 7, "train/q_mean": -step * 1e3})
            for step in (1000, 2000, 3000)]
    append_scalars(log_dir, rows[:2])
    append_scalars(log_dir, rows)
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["eval/normalized_score", "train/q_mean"]
    for tag in ("eval/normalized_score", "train/q_mean"):
        read = [(e.step, e.value) for e in accumulator.Scalars(tag)]
        assert read == [(s, pytest.approx(v[tag], rel=1e-7)) for s, v in rows]
    # TensorBoard checks every CRC: one flipped bit is refused, so the ones above were right.
    (path,) = event_files(log_dir)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    reader = pywrap_tensorflow.PyRecordReader_New(str(path), 0, "", None)
    with pytest.raises(errors.DataLossError, match="crc32"):
        for _ in range(len(rows) + 2):
            reader.GetNext()


def test_bench_writes_one_event_stream_per_seed_and_appends_on_resume(toy_hopper_dataset,
                                                                       tmp_path):
    from offrl_jax.cli import main
    from offrl_jax.data import write_d4rl_hdf5

    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    out = tmp_path / "run"
    args = ["bench", "--profile", "tiny", "--algos", "bc", "--tasks",
            f"tb-toy=hopper:{tmp_path / 'toy.hdf5'}", "--seeds", "2", "--eval-every", "20",
            "--eval-episodes", "1", "--out", str(out), "--tensorboard"]
    main([*args, "--updates", "40"])
    logs = out / "logs" / "bc__tb-toy"
    assert sorted(p.name for p in logs.iterdir()) == ["seed0", "seed0.csv", "seed1", "seed1.csv"]
    records = [json.loads(line) for line in
               (out / "records" / "bc__tb-toy.jsonl").read_text().splitlines()]
    for seed in (0, 1):
        (path,) = event_files(logs / f"seed{seed}")
        events = read_events(path)[1:]
        mine = [r for r in records if r["seed"] == seed]
        assert [e["step"] for e in events] == [r["step"] for r in mine] == [20, 40]
        for event, record in zip(events, mine, strict=True):
            scalars = event["scalars"]
            assert sorted(scalars) == ["eval/failed", "eval/normalized_score",
                                       "train/action_mse", "train/nll"]
            assert scalars["eval/normalized_score"] == pytest.approx(
                record["normalized_score"], rel=1e-6)  # stored as float32
            assert scalars["train/nll"] == pytest.approx(record["metrics"]["nll"], rel=1e-6)
            assert scalars["eval/failed"] == 0.0
    before = event_files(logs / "seed0")[0].read_bytes()
    # Resumed with more updates: the new interval is appended, the earlier ones kept once.
    main([*args, "--updates", "60"])
    (path,) = event_files(logs / "seed0")
    assert path.read_bytes().startswith(before)
    assert [e["step"] for e in read_events(path)] == [0, 20, 40, 60]
