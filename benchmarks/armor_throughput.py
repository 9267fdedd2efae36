"""ATAC and ARMOR updates/s for 1, 2, 4, 8 vmapped seeds at the paper's sizes, hopper dims.

3x256 actor and twin critics, batch 256 (ARMOR: 256 real + 256 model pairs, 4x200 model, a D_model
ring of ``model_buffer_capacity``), synthetic hopper-shaped data (no files). The warm start and the
model pretraining are cut to a few steps: this measures the update loop (the Trainer's compiled
interval, seeds vmapped), not init. Prints the device and the load average (a shared machine).

    python -m benchmarks.armor_throughput [--algos atac armor] [--seeds 1 2 4 8]
        [--updates 100] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from benchmarks.common import device_name
from benchmarks.throughput import synthetic_dataset
from offrl_jax.algorithms import armor, atac
from offrl_jax.tasks import get_env_spec
from offrl_jax.training.loop import make_interval_fn

# Init work kept minimal: these settings do not change the cost of an update.
QUICK_INIT = {"warmstart_steps": 2}
ARMOR_QUICK_INIT = {**QUICK_INIT, "dynamics.max_epochs": 1, "dynamics.patience": 1}


def measure(algorithm, config, dataset, num_seeds: int, updates: int, repeats: int):
    """(init + compile seconds, best updates/s of each seed) of one compiled interval."""
    made = algorithm.make(config, get_env_spec("hopper"))
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    start = time.perf_counter()
    init = jax.jit(jax.vmap(made.init, in_axes=(0, None)))
    state = init(keys, dataset)
    failed = np.zeros(num_seeds, bool)
    interval = jax.jit(jax.vmap(make_interval_fn(made, updates),
                                in_axes=(0, 0, None, 0)))
    state, failed, _ = jax.block_until_ready(interval(state, failed, dataset, keys))
    setup = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        state, failed, _ = jax.block_until_ready(interval(state, failed, dataset, keys))
        best = min(best, time.perf_counter() - start)
    return setup, updates / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algos", nargs="+", default=["atac", "armor"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    dataset = synthetic_dataset()
    configs = {"atac": (atac.ALGORITHM, atac.ALGORITHM.make_config(overrides=QUICK_INIT)),
               "armor": (armor.ALGORITHM,
                         armor.ALGORITHM.make_config(overrides=ARMOR_QUICK_INIT))}
    print(f"device: {device_name()}; load average {os.getloadavg()[0]:.1f}; "
          f"{args.updates} updates per timed call, best of {args.repeats}; synthetic "
          f"hopper-shaped data ({dataset.size} transitions)")
    print("| algorithm | seeds | init+compile (s) | updates/s (each seed) | seed-updates/s |")
    print("|---|---|---|---|---|")
    for name in args.algos:
        algorithm, config = configs[name]
        for seeds in args.seeds:
            setup, rate = measure(algorithm, config, dataset, seeds, args.updates, args.repeats)
            print(f"| {name} | {seeds} | {setup:.1f} | {rate:.1f} | {rate * seeds:.1f} |",
                  flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
