"""benchmarks/gpu_slice.sh, the device window's one script: valid bash, and (slow) the whole
window at TINY=1 on a CPU: no install where the simulators import, the device check's files,
a cell trained into the run directory, and the few files that come back."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_slice.sh"


def test_the_window_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.slow
def test_the_window_at_tiny_size(tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    env = {**os.environ, "TINY": "1", "ALGOS": "cql", "RUN": str(run), "PYTHON": sys.executable,
           "OFFRL_JAX_CACHE_DIR": str(tmp_path / "cache"), "OFFRL_COMMIT": "abc123"}
    subprocess.run(["bash", str(SCRIPT), str(out), "400", "40"], check=True, cwd=REPO, env=env,
                   timeout=900)
    log = (out / "window.log").read_text()
    assert "no install" in log and "cql: exit 0" in log
    assert "commit abc123" in (out / "machine.txt").read_text()
    assert {path.name for path in out.iterdir()} == {
        "machine.txt", "window.log", "device_check.md", "device_check.json", "window.tar.gz",
        "checkpoints.tar.gz"}  # at most the eight files the device tool brings back
    check = json.loads((out / "device_check.json").read_text())
    assert check["commit"] == "abc123" and check["tiny"]
    assert (run / "records" / "cql__hopper-medium-replay.jsonl").exists()
    with tarfile.open(out / "window.tar.gz") as archive:
        names = archive.getnames()
    assert "./machine.txt" in names and "./cql.log" in names
    assert any(name.startswith("run/records/") for name in names)
    assert not any("checkpoints" in name for name in names)
    assert any((tmp_path / "cache").iterdir())  # the bench process wrote the compile cache
