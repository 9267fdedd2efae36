"""`make install` on a CPU box and on a GPU box: which environment and which JAX each gets."""

import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]


def dry_run(*variables) -> str:
    return subprocess.run(["make", "-n", "-C", str(ROOT), "install", *variables],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def test_cpu_install_uses_the_pinned_versions_and_gpu_install_cuda_jax(tmp_path):
    cpu = dry_run("GPU=0", f"VENV={tmp_path}/cpu")
    assert f"-m venv  {tmp_path}/cpu" in cpu and "--system-site-packages" not in cpu
    assert '-e ".[dev]" -c constraints.txt' in cpu
    for cuda in ("12", "13"):
        gpu = dry_run("GPU=1", f"CUDA={cuda}", f"VENV={tmp_path}/gpu",
                      "PYTHON=false")  # no system jax that runs on a GPU
        assert f"--system-site-packages {tmp_path}/gpu" in gpu
        assert f'-e ".[dev,cuda{cuda}]"' in gpu and "constraints.txt" not in gpu


def test_pinned_versions_lie_in_the_ranges_and_gpu_extras_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The dependencies and the dev extra's (CI installs both under constraints.txt).
    ranges = {Requirement(r).name: Requirement(r).specifier
              for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    pins = [line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert {name for name, _ in pins} >= {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint"}
    for name, version in pins:
        assert version in ranges[name], (name, version, ranges[name])
    # The ranges accept the JAX the GPU images of this project carry (0.11.2).
    assert "0.11.2" in ranges["jax"] and "0.11.2" in ranges["jaxlib"]
    extras = project["optional-dependencies"]
    for cuda in ("cuda12", "cuda13"):
        (requirement,) = [Requirement(r) for r in extras[cuda]]
        assert requirement.name == "jax" and requirement.extras == {cuda}
        assert requirement.specifier == ranges["jax"]
