"""Training throughput per algorithm: updates/s for 1, 2, 4, 8 vmapped seeds, compile time, and
the speed-up over one seed, on the device JAX sees. Uses a synthetic hopper-shaped dataset, so
no data files are needed.

Algorithms with a refresh (model rollouts, adversary steps) are timed over whole refresh
periods, so their rates include the refresh. Work done once in ``init`` (dynamics-model fits,
behaviour-cloning warm starts) is not timed and is cut short by :data:`INIT_ONLY` (override with
``--set``); every setting used by the timed updates keeps the algorithm's full-size default.

    python -m benchmarks.throughput [--algos bc iql cql] [--updates 200] [--seeds 1 2 4 8]
        [--set [ALGO.]FIELD=VALUE ...] [--out results/throughput.md]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks.common import device_name, load_note
from offrl_jax.algorithms.registry import ALGORITHMS, get_algorithm
from offrl_jax.data import Dataset, episodes_to_arrays
from offrl_jax.data.toy import toy_episodes
from offrl_jax.files import write_text_atomic
from offrl_jax.tasks import get_env_spec
from offrl_jax.training.cli import parse_overrides
from offrl_jax.training.loop import make_interval_fn

# Settings used only by init, shortened since init is not timed (fields a config lacks are
# skipped): one epoch of model fitting, 100 steps of BC pretraining / warm start.
INIT_ONLY = {"dynamics.max_epochs": 1, "bc_pretrain_steps": 100, "warmstart_steps": 100}


def synthetic_dataset(num_episodes: int = 50) -> Dataset:
    episodes = toy_episodes("hopper", [1000] * num_episodes, seed=0)
    return Dataset.from_arrays(**episodes_to_arrays(episodes), env="hopper")


def benchmark_config(algorithm, updates: int, overrides: dict):
    """The algorithm's hopper-medium config with :data:`INIT_ONLY` and ``overrides``
    (``{algo or "*": {path: value}}``, "*" paths applied where the config has them)."""
    paths = algorithm.paths()
    chosen = {"total_updates": updates, **INIT_ONLY, **overrides.get("*", {})}
    chosen = {k: v for k, v in chosen.items() if k in paths}
    return algorithm.make_config("hopper-medium", {**chosen,
                                                   **overrides.get(algorithm.name, {})})


def measure(algorithm, config, dataset, num_seeds: int, updates: int) -> tuple[float, float]:
    """(compile seconds, updates/s per seed) of one compiled interval, timed on its first run
    from the initial state (the program is compiled ahead, so the run is not)."""
    made = algorithm.make(config, get_env_spec("hopper"))
    refresh = made.refresh_every or updates
    updates = max(refresh, updates // refresh * refresh)
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    init = jax.jit(jax.vmap(made.init, in_axes=(0, None)))
    state = jax.block_until_ready(init(keys, dataset))
    failed = np.zeros(num_seeds, bool)
    interval = jax.jit(jax.vmap(make_interval_fn(made, updates),
                                in_axes=(0, 0, None, 0)))
    start = time.perf_counter()
    compiled = interval.lower(state, failed, dataset, keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(compiled(state, failed, dataset, keys))
    return compile_s, updates / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algos", nargs="+", default=sorted(ALGORITHMS))
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="[ALGO.]FIELD=VALUE", help="config override (repeatable)")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) here")
    args = parser.parse_args()
    overrides = parse_overrides(args.overrides)
    dataset = synthetic_dataset()
    lines = [f"Device: {device_name()} ({load_note()}); {args.updates} updates per timed call "
             f"(whole refresh periods where an algorithm has one); synthetic hopper-shaped data "
             f"({dataset.size} transitions); init-only settings {INIT_ONLY}; overrides "
             f"{overrides or 'none'}.", "",
             "| algorithm | seeds | compile (s) | updates/s (each seed) | "
             "seed-updates/s | vs 1 seed |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.algos:
        algorithm = get_algorithm(name)
        config = benchmark_config(algorithm, args.updates, overrides)
        base = None
        for seeds in args.seeds:
            first, rate = measure(algorithm, config, dataset, seeds, args.updates)
            base = base or rate
            line = (f"| {name} | {seeds} | {first:.1f} | {rate:.1f} | {rate * seeds:.1f} | "
                    f"{rate * seeds / base:.2f}x |")
            lines.append(line)
            print(line, flush=True)
    if args.out:
        write_text_atomic(__import__("pathlib").Path(args.out), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
