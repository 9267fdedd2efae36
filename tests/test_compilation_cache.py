"""The persistent compilation cache: where it goes, how it is turned off, and a second process
reading what the first one wrote instead of compiling."""

import json
import subprocess
import sys
from pathlib import Path

from offrl_jax.training.compilation_cache import CACHE_DIR_VAR, cache_directory

PROGRAM = """
import json, sys, time
from offrl_jax.training.compilation_cache import cache_events, enable_compilation_cache
enable_compilation_cache(sys.argv[1], min_compile_s=0)
import jax, jax.numpy as jnp

def layers(x):
    for i in range(20):
        x = jnp.tanh(x @ x.T + i)
    return x

start = time.perf_counter()
jax.jit(layers).lower(jnp.ones((32, 32))).compile()
print(json.dumps({**cache_events(), "seconds": time.perf_counter() - start}))
"""


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_DIR_VAR, "off")
    assert cache_directory() is None
    monkeypatch.setenv(CACHE_DIR_VAR, str(tmp_path / "jax"))
    assert cache_directory() == tmp_path / "jax"
    monkeypatch.delenv(CACHE_DIR_VAR)
    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path / "data"))
    assert cache_directory() == tmp_path / "data" / "jax_compilation_cache"


def test_a_second_process_reads_the_cache(tmp_path):
    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], check=True,
                              capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run()
    assert first["hits"] == 0 and first["misses"] >= 1 and any(tmp_path.iterdir())
    second = run()
    assert second["hits"] >= 1 and second["misses"] == 0
