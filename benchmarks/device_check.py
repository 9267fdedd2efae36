"""One command that says what a machine (a GPU above all) does with this suite, in minutes.

For every chosen algorithm, updates/s at 1 and N vmapped seeds (compile time apart), one MOPO
model rollout of 50k start states x horizon 5, MJX environment steps/s against the host's
Gymnasium, and the projected wall time of the ``full`` profile from the measured rates. Writes
``device_check.md`` and ``device_check.json`` (device, versions, commit, every number) into
``--out``. A time budget stops measuring before it runs out: what was skipped says so.

``--size full`` (default) times each algorithm's hopper-medium settings at full size (what
``make benchmark --profile full`` trains; init-only work cut short as in
:mod:`benchmarks.throughput`); ``--size small`` uses the ``tiny`` profile's networks, models and
batch sizes, for a CPU (and the test suite).

    python -m benchmarks.device_check [--algos mopo cql ...] [--seeds 1 32] [--updates 200]
        [--size full|small] [--budget-s 270] [--out results/device_check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import jax

from benchmarks.common import device_name, load_note
from benchmarks.env_throughput import device_rate, host_rate
from benchmarks.throughput import INIT_ONLY, measure, synthetic_dataset
from offrl_jax.algorithms.registry import ALGORITHMS, get_algorithm
from offrl_jax.files import write_text_atomic
from offrl_jax.tasks import get_env_spec
from offrl_jax.training.runner import RUN_PROFILES

FULL = RUN_PROFILES["full"]
# --size small: the tiny profile's settings ("*" entries where a config has the path).
SMALL = {**RUN_PROFILES["tiny"].algorithm_overrides["*"], "rollouts.batch_size": 1000}


def check_config(algorithm, size: str, updates: int):
    """The algorithm's hopper-medium config at ``size``, init-only work cut short."""
    paths = algorithm.paths()
    chosen = {"total_updates": updates, **INIT_ONLY, **(SMALL if size == "small" else {})}
    if size == "small":
        chosen.update(RUN_PROFILES["tiny"].algorithm_overrides.get(algorithm.name, {}))
    return algorithm.make_config("hopper-medium",
                                 {k: v for k, v in chosen.items() if k in paths})


def rollout_time(size: str) -> dict:
    """Seconds of one MOPO refresh (its rollouts: 50k starts x horizon 5 at full size) for
    one seed, compile apart."""
    algorithm = get_algorithm("mopo")
    config = check_config(algorithm, size, 1000)
    made = algorithm.make(config, get_env_spec("hopper"))
    dataset = synthetic_dataset(10 if size == "small" else 50)
    state = jax.block_until_ready(jax.jit(made.init)(jax.random.PRNGKey(0), dataset))
    refresh = jax.jit(made.refresh)
    start = time.perf_counter()
    compiled = refresh.lower(state, dataset, jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(compiled(state, dataset, jax.random.PRNGKey(1)))
    return {"starts": config.rollouts.batch_size, "horizon": config.rollouts.horizon,
            "compile_s": compile_s, "seconds": time.perf_counter() - start}


def env_rates(batch: int, steps: int) -> dict:
    host = host_rate("hopper", min(batch, 16), steps)
    device, first = device_rate("hopper", batch, steps)
    return {"host_batch": min(batch, 16), "host_steps_per_s": host, "device_batch": batch,
            "device_steps_per_s": device, "device_compile_and_first_s": first,
            "device_vs_host": device / host}


def projection(rates: dict, seeds_per_cell: int) -> dict:
    """Hours of the ``full`` profile per algorithm: its updates for every task, at the rate
    measured with the fewest vmapped seeds >= the profile's seeds (else the most measured),
    cells one after another on one device; evaluation and model fitting not included."""
    out = {}
    for name, by_seeds in rates.items():
        measured = sorted(by_seeds)
        chosen = next((s for s in measured if s >= seeds_per_cell), measured[-1])
        rate = by_seeds[chosen]
        updates = FULL.train_for(name).num_updates
        hours = len(FULL.default_tasks) * updates / rate / 3600
        out[name] = {"rate_seeds": chosen, "updates_per_s": rate, "updates": updates,
                     "tasks": len(FULL.default_tasks), "hours": hours}
    return out


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def markdown(result: dict) -> str:
    lines = [f"# Device check: {result['device']}", "",
             f"jax {result['jax']}, commit {result['commit']}, {result['date']}, size "
             f"`{result['size']}`, {result['updates']} updates per timed call (whole refresh "
             f"periods where an algorithm has one), {result['load']}; wall time "
             f"{result['wall_s']:.0f} s.", "",
             "| algorithm | seeds | compile (s) | updates/s (each seed) | seed-updates/s | "
             "vs 1 seed |", "|---|---|---|---|---|---|"]
    for row in result["training"]:
        if row.get("skipped"):
            lines.append(f"| {row['algorithm']} | {row['seeds']} | skipped: {row['skipped']} "
                         f"| | | |")
            continue
        lines.append(f"| {row['algorithm']} | {row['seeds']} | {row['compile_s']:.1f} | "
                     f"{row['updates_per_s']:.1f} | {row['seed_updates_per_s']:.1f} | "
                     f"{row['vs_one_seed']:.2f}x |")
    rollout = result.get("rollout")
    lines += ["", "MOPO rollout (one refresh, one seed): " + (
        f"{rollout['starts']} starts x horizon {rollout['horizon']} in "
        f"{rollout['seconds']:.2f} s (compile {rollout['compile_s']:.1f} s)"
        if rollout and "seconds" in rollout else f"skipped: {(rollout or {}).get('skipped')}")]
    env = result.get("env")
    lines.append("Environment steps/s, hopper: " + (
        f"MJX {env['device_steps_per_s']:.0f} (batch {env['device_batch']}), Gymnasium host "
        f"{env['host_steps_per_s']:.0f} (batch {env['host_batch']}): "
        f"{env['device_vs_host']:.1f}x" if env and "device_steps_per_s" in env
        else f"skipped: {(env or {}).get('skipped')}"))
    lines += ["", f"Projected `full` profile ({result['full_seeds']} seeds, "
              f"{len(FULL.default_tasks)} tasks, cells in turn on one device, training only):",
              "", "| algorithm | updates | rate used (seeds) | hours |", "|---|---|---|---|"]
    for name, row in result["projection"].items():
        lines.append(f"| {name} | {row['updates']:,} | {row['updates_per_s']:.1f} "
                     f"({row['rate_seeds']}) | {row['hours']:.1f} |")
    total = sum(row["hours"] for row in result["projection"].values())
    lines.append(f"| all | | | {total:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algos", nargs="+", default=sorted(ALGORITHMS),
                        choices=sorted(ALGORITHMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--env-batch", type=int, default=1024)
    parser.add_argument("--env-steps", type=int, default=100)
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="stop starting new measurements after this many seconds")
    parser.add_argument("--out", default="results/device_check")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    over = lambda: time.perf_counter() - started > args.budget_s  # noqa: E731
    dataset = synthetic_dataset(10 if args.size == "small" else 50)
    result = {"device": device_name(), "device_count": jax.device_count(),
              "jax": jax.__version__, "commit": commit(), "load": load_note(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "size": args.size,
              "updates": args.updates, "full_seeds": FULL.default_seeds, "training": []}
    rates: dict[str, dict[int, float]] = {}
    for name in args.algos:
        algorithm = get_algorithm(name)
        config = check_config(algorithm, args.size, args.updates)
        base = None
        for seeds in args.seeds:
            row = {"algorithm": name, "seeds": seeds}
            if over():
                row["skipped"] = f"budget of {args.budget_s:.0f} s spent"
            else:
                compile_s, rate = measure(algorithm, config, dataset, seeds, args.updates)
                base = base or rate
                row.update(compile_s=compile_s, updates_per_s=rate,
                           seed_updates_per_s=rate * seeds, vs_one_seed=rate * seeds / base)
                rates.setdefault(name, {})[seeds] = rate
            result["training"].append(row)
            print(json.dumps(row), flush=True)
    result["rollout"] = ({"skipped": "budget spent"} if over() else rollout_time(args.size))
    result["env"] = ({"skipped": "budget spent"} if over()
                     else env_rates(args.env_batch, args.env_steps))
    result["projection"] = projection(rates, FULL.default_seeds)
    result["wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "device_check.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(out / "device_check.md", markdown(result))
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
