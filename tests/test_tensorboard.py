"""TensorBoard event files of ``offrl bench --tensorboard`` (written by tensorboardX).

tensorboardX has no reader, and TensorBoard (which has one) is too large a test dependency, so
the files are read here with their TFRecord framing (``uint64 length | uint32 masked CRC-32C of
the length | data | uint32 masked CRC-32C of the data``, each checked with tensorboardX's CRC) and
tensorboardX's compiled ``Event`` message.
"""

import importlib.util
import json
import struct
import sys

import numpy as np
import pytest

from offrl_jax.results.tensorboard import TensorBoardLogs, last_step, scalars

needs_tensorboardx = pytest.mark.skipif(importlib.util.find_spec("tensorboardX") is None,
                                        reason="tensorboardX is not installed")


def read_events(path) -> list:
    """Every event of a file, each record's two CRCs checked; a cut record is an error."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    blob, position, events = path.read_bytes(), 0, []
    while position < len(blob):
        header = blob[position:position + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack_from("<I", blob, position + 8)
        data = blob[position + 12:position + 12 + length]
        (data_crc,) = struct.unpack_from("<I", blob, position + 12 + length)
        assert header_crc == masked_crc32c(header) and data_crc == masked_crc32c(data), path
        events.append(Event.FromString(data))
        position += 16 + length
    return events


def event_files(log_dir):
    return sorted(log_dir.glob("events.out.tfevents.*"))


def logged(log_dir) -> list[tuple[int, dict[str, float]]]:
    """``(step, {tag: value})`` of every scalar event of the log directory, oldest file first;
    each file opens with tensorboardX's file-version header."""
    out = []
    for path in event_files(log_dir):
        events = read_events(path)
        assert events[0].file_version == "brain.Event:2"
        out += [(e.step, {v.tag: v.simple_value for v in e.summary.value})
                for e in events[1:]]
    return out


def record(step, score, seed=0, **metrics):
    return {"step": step, "seed": seed, "normalized_score": score, "failed": False,
            "metrics": metrics}


def test_a_record_gives_the_csv_columns_as_tags():
    assert scalars(record(10, 1.5, loss=0.25, none=None)) == {
        "eval/failed": 0.0, "eval/normalized_score": 1.5, "train/loss": 0.25}
    scored = {**record(10, 3.0), "failed": True, "reference": {"normalized_score": 5.0}}
    assert scalars(scored) == {"eval/failed": 1.0, "eval/normalized_score": 3.0,
                               "eval/reference_normalized_score": 5.0,
                               "eval/relative_normalized_score": -2.0}
    assert scalars({**record(10, None), "reference": {"normalized_score": 5.0}}) == {
        "eval/failed": 0.0, "eval/reference_normalized_score": 5.0}


@needs_tensorboardx
def test_each_step_once_across_calls_and_a_cut_record_is_dropped(tmp_path):
    log_dir = tmp_path / "logs" / "bc__t" / "seed0"
    first = [record(10, 1.5, loss=0.25)]
    with TensorBoardLogs(tmp_path, "bc", "t") as logs:
        logs.write(first)
        # All records so far are passed each time; only the new steps are logged.
        logs.write(first + [record(20, -3.0, loss=float("nan"))])
    (path,) = event_files(log_dir)
    before = path.read_bytes()
    rows = logged(log_dir)
    assert [step for step, _ in rows] == [10, 20]
    assert rows[0][1] == {"eval/failed": 0.0, "eval/normalized_score": 1.5, "train/loss": 0.25}
    assert rows[1][1]["eval/normalized_score"] == -3.0 and np.isnan(rows[1][1]["train/loss"])
    assert last_step(log_dir) == 20
    # A resumed call (its records repeat the earlier ones) adds a file with the later steps.
    resumed = first + [record(20, -3.0), record(30, 4.0)]
    with TensorBoardLogs(tmp_path, "bc", "t") as logs:
        logs.write(resumed)
    assert len(event_files(log_dir)) == 2 and path.read_bytes() == before
    assert [step for step, _ in logged(log_dir)] == [10, 20, 30]
    # A kill in the middle of a write leaves a cut record: cut off, then its step rewritten.
    newest = event_files(log_dir)[-1]
    newest.write_bytes(newest.read_bytes()[:-5])
    assert last_step(log_dir) == 20
    with TensorBoardLogs(tmp_path, "bc", "t") as logs:
        logs.write(resumed + [record(40, 5.0)])
    assert [step for step, _ in logged(log_dir)] == [10, 20, 30, 40]


def test_tensorboard_without_tensorboardx_stops_before_training(monkeypatch, tmp_path,
                                                                capsys):
    from offrl_jax.cli import main

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX fails
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--profile", "tiny", "--algos", "bc", "--tasks", "hopper-medium",
              "--seeds", "1", "--out", str(tmp_path / "run"), "--tensorboard"])
    assert str(stop.value) == ('offrl bench: --tensorboard needs the tensorboardX package '
                               '(pip install tensorboardX, or pip install -e ".[tensorboard]")')
    assert not (tmp_path / "run").exists() and capsys.readouterr().out == ""


@needs_tensorboardx
def test_bench_writes_one_event_stream_per_seed_and_adds_only_new_steps_on_resume(
        toy_hopper_dataset, tmp_path):
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
        rows = logged(logs / f"seed{seed}")
        mine = [r for r in records if r["seed"] == seed]
        assert [step for step, _ in rows] == [r["step"] for r in mine] == [20, 40]
        for (_, values), r in zip(rows, mine, strict=True):
            assert sorted(values) == ["eval/failed", "eval/normalized_score",
                                      "train/action_mse", "train/nll"]
            assert values["eval/normalized_score"] == pytest.approx(
                r["normalized_score"], rel=1e-6)  # stored as float32
            assert values["train/nll"] == pytest.approx(r["metrics"]["nll"], rel=1e-6)
            assert values["eval/failed"] == 0.0
    (first,) = event_files(logs / "seed0")
    before = first.read_bytes()
    # Resumed with more updates: the new interval is logged, the earlier ones kept once.
    main([*args, "--updates", "60"])
    assert first.read_bytes() == before and len(event_files(logs / "seed0")) == 2
    assert [step for step, _ in logged(logs / "seed0")] == [20, 40, 60]
