"""What a machine (a GPU above all) does with this suite, measured within a fixed time budget.

Every registered algorithm is timed at the ``full`` profile's seeds (5, vmapped: the rate a
table's cell trains at) and at 1 seed, each with its share of the budget: the compilation of
its training interval (lower + compile) is timed apart from the first call and from the steady
calls; the steady calls repeat until the algorithm's share is spent (at least three, at most
``--max-calls``), so a costly algorithm gets fewer timed calls. A measurement that cannot
start inside its share says why in its row. Before the training, one MOPO model refresh (its
rollouts) and the environment steps (host Gymnasium, MJX when installed, a policy call: the
evaluation's cost); after it, in a second process reading the persistent compilation cache the
first one wrote, each measured interval's compile time with a warm cache. The parts' shares of
the budget are :data:`SHARES`.

From the measured rates it projects the hours, on this device, of (a) the poster's table (ARMOR,
MOPO, COMBO, MOReL, RAMBO, ATAC, CQL, IQL, BC on the ``full`` profile's nine tasks, five seeds,
each algorithm's reference updates) and (b) the whole ``full`` profile: cells one after another
on one device, training plus evaluation (:func:`evaluation_seconds` says how an evaluation is
estimated); dynamics-model fitting and warm starts (init) are not projected.

Writes ``device_check.json`` and ``device_check.md`` into ``--out`` with the device, the
library versions and the commit. ``--tiny`` runs the same steps with the ``tiny`` profile's
networks and models, small data and a 60 s budget (a CPU, the test suite).

    python -m benchmarks.device_check [--tiny] [--budget-s 240] [--algos ...]
        [--out results/device_check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, load_note
from benchmarks.throughput import INIT_ONLY, synthetic_dataset
from offrl_jax.algorithms.registry import ALGORITHMS, get_algorithm
from offrl_jax.files import write_text_atomic
from offrl_jax.results.provenance import git_commit, library_versions
from offrl_jax.tasks import get_env_spec
from offrl_jax.training.compilation_cache import cache_events, enable_compilation_cache
from offrl_jax.training.loop import make_interval_fn
from offrl_jax.training.profiles import RUN_PROFILES

FULL = RUN_PROFILES["full"]
TINY = RUN_PROFILES["tiny"]
# The poster's table.
POSTER = ("armor", "mopo", "combo", "morel", "rambo", "atac", "cql", "iql", "bc")
# The order of measurement: the poster's nine first, each group cheapest first (by the 2-core
# and H200 compile and update times of docs/speed.md), so that a short budget measures the most
# and the time the cheap ones leave passes to the costly ones.
MEASURE_ORDER = ("bc", "iql", "cql", "atac", "mopo", "combo", "morel", "rambo", "armor",
                 "bc10", "td3bc", "rebrac", "sacn", "edac", "mobile")
# Parts of the budget, in the order they run. The rollout and the host environment steps go
# first, whatever they take (the evaluation estimate needs them); MJX starts only inside its
# share (its compile alone can take a minute); the training gets what is left up to the warm
# part's share, and the warm part what the training leaves.
SHARES = {"rollout": 0.05, "env": 0.10, "training": 0.70, "warm": 0.15}
MIN_CALLS = 3  # steady calls timed even when the share is spent: cheap next to a compile
EPISODE_LENGTH = 1000  # the MuJoCo tasks' time limit


def check_config(algorithm, tiny: bool, updates: int):
    """The algorithm's hopper-medium config, init-only work cut short; ``tiny``: the tiny
    profile's networks, models and batches."""
    paths = algorithm.paths()
    chosen = {"total_updates": updates}
    if tiny:
        chosen.update(TINY.algorithm_overrides["*"])
        chosen.update(TINY.algorithm_overrides.get(algorithm.name, {}))
    chosen.update({key: min(value, chosen.get(key, value)) for key, value in INIT_ONLY.items()})
    return algorithm.make_config("hopper-medium", {k: v for k, v in chosen.items()
                                                   if k in paths})


def _programs(name: str, tiny: bool, updates: int, dataset, seeds: int):
    """(made algorithm, jitted init, jitted interval, interval updates, keys): the programs a
    measurement compiles, built the same way in the warm process."""
    algorithm = get_algorithm(name)
    made = algorithm.make(check_config(algorithm, tiny, updates), get_env_spec("hopper"))
    refresh = made.refresh_every or updates
    chunk = max(refresh, updates // refresh * refresh)
    init = jax.jit(jax.vmap(made.init, in_axes=(0, None)))
    interval = jax.jit(jax.vmap(make_interval_fn(made, chunk), in_axes=(0, 0, None, 0)),
                       donate_argnums=(0,))
    return made, init, interval, chunk, jax.random.split(jax.random.PRNGKey(0), seeds)


def measure_training(name: str, tiny: bool, updates: int, dataset, seeds: int,
                     deadline: float, max_calls: int) -> dict:
    """One (algorithm, seeds) row: ``init_s`` (init's compile and run, init-only settings
    shortened), ``compile_s`` (the interval's lower + compile), ``first_call_s``, then steady
    calls until ``deadline`` (``time.perf_counter()``; at least :data:`MIN_CALLS`, at most
    ``max_calls``):
    ``updates_per_s`` per seed from the steady calls alone."""
    made, init, interval, chunk, keys = _programs(name, tiny, updates, dataset, seeds)
    start = time.perf_counter()
    state = jax.block_until_ready(init(keys, dataset))
    init_s = time.perf_counter() - start
    failed = np.zeros(seeds, bool)
    start = time.perf_counter()
    compiled = interval.lower(state, failed, dataset, keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, failed, _ = jax.block_until_ready(compiled(state, failed, dataset, keys))
    first_call_s = time.perf_counter() - start
    calls = []
    while len(calls) < max_calls and (len(calls) < MIN_CALLS
                                      or time.perf_counter() < deadline):
        start = time.perf_counter()
        state, failed, _ = jax.block_until_ready(compiled(state, failed, dataset, keys))
        calls.append(time.perf_counter() - start)
    rate = chunk * len(calls) / sum(calls)
    return {"algorithm": name, "seeds": seeds, "updates_per_call": chunk, "init_s": init_s,
            "compile_s": compile_s, "first_call_s": first_call_s, "steady_calls": len(calls),
            "steady_s": sum(calls), "updates_per_s": rate, "seed_updates_per_s": rate * seeds,
            "evaluations_per_interval": 1 + (made.reference_act is not None)}


def warm_compile(name: str, tiny: bool, updates: int, dataset, seeds: int) -> dict:
    """The same interval program compiled again (the warm process): seconds and the persistent
    cache's hits during it. The state's shapes come from ``jax.eval_shape`` (init not run)."""
    _, init, interval, _, keys = _programs(name, tiny, updates, dataset, seeds)
    state = jax.eval_shape(init, keys, dataset)
    before = cache_events()
    start = time.perf_counter()
    interval.lower(state, np.zeros(seeds, bool), dataset, keys).compile()
    seconds = time.perf_counter() - start
    return {"algorithm": name, "seeds": seeds, "warm_compile_s": seconds,
            "cache_hits": cache_events()["hits"] - before["hits"]}


def rollout_time(tiny: bool, dataset) -> dict:
    """One MOPO refresh (its model rollouts: 50k starts x horizon 5 at full size), one seed:
    compile, then the best of two calls."""
    algorithm = get_algorithm("mopo")
    config = check_config(algorithm, tiny, 1000)
    made = algorithm.make(config, get_env_spec("hopper"))
    state = jax.block_until_ready(jax.jit(made.init)(jax.random.PRNGKey(0), dataset))
    start = time.perf_counter()
    compiled = jax.jit(made.refresh).lower(state, dataset, jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - start
    calls = []
    for i in range(2):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, dataset, jax.random.PRNGKey(2 + i)))
        calls.append(time.perf_counter() - start)
    return {"starts": config.rollouts.batch_size, "horizon": config.rollouts.horizon,
            "compile_s": compile_s, "seconds": min(calls),
            "model_steps_per_s": config.rollouts.batch_size * config.rollouts.horizon
            / min(calls)}


def policy_call_s(batch: int, obs_dim: int, act_dim: int, hidden: int, calls: int) -> float:
    """Seconds of one jitted policy call on ``batch`` observations, its actions back on the
    host: what the host evaluation pays per environment step besides the physics."""
    key = jax.random.PRNGKey(0)
    w1 = jax.random.normal(key, (obs_dim, hidden)) * 0.1
    w2 = jax.random.normal(key, (hidden, hidden)) * 0.1
    w3 = jax.random.normal(key, (hidden, act_dim)) * 0.1
    act = jax.jit(lambda obs: jnp.tanh(jnp.tanh(jnp.tanh(obs @ w1) @ w2) @ w3))
    obs = np.zeros((batch, obs_dim), np.float32)
    np.asarray(act(obs))
    start = time.perf_counter()
    for _ in range(calls):
        np.asarray(act(obs))
    return (time.perf_counter() - start) / calls


def env_rates(device_batch: int, steps: int, eval_batch: int, tiny: bool,
              mjx: str | None) -> dict:
    """Hopper steps/s: Gymnasium on the host at the evaluation's batch (seeds x episodes), MJX
    on the device at ``device_batch`` (when mujoco.mjx imports; ``mjx``: why not, else None),
    and a policy call's seconds."""
    from benchmarks.env_throughput import host_rate

    spec = get_env_spec("hopper")
    out = {"host_batch": eval_batch,
           "host_steps_per_s": host_rate("hopper", eval_batch, steps),
           "policy_call_s": policy_call_s(eval_batch, spec.obs_dim, spec.act_dim,
                                          32 if tiny else 256, steps)}
    if mjx is not None:
        out["device_skipped"] = mjx
        return out
    try:
        from benchmarks.env_throughput import device_rate

        rate, first = device_rate("hopper", device_batch, steps)
        out.update(device_batch=device_batch, device_steps_per_s=rate,
                   device_compile_and_first_s=first,
                   device_vs_host=rate / out["host_steps_per_s"])
    except ImportError as error:
        out["device_skipped"] = f"MJX unavailable ({error})"
    return out


def evaluation_seconds(env: dict, eval_batch: int) -> float:
    """Seconds of one evaluation of the ``full`` profile on the host backend (its default):
    ``eval_batch`` = seeds x episodes environments stepped in lock-step for a whole episode
    (1000 steps: an upper bound, as if no episode fell early), each step costing the batch's
    physics at the measured host rate plus one policy call on the device."""
    return EPISODE_LENGTH * (eval_batch / env["host_steps_per_s"] + env["policy_call_s"])


def project(rates: dict[str, dict[int, float]], algorithms, eval_s: float | None,
            evaluations: dict[str, int] | None = None, profile=FULL) -> dict:
    """Hours of ``algorithms`` on ``profile`` (its tasks, seeds, each algorithm's updates and
    evaluation interval), cells one after another on one device. ``rates``: measured updates/s
    per seed, ``{algorithm: {seeds: rate}}``; the profile's seed count is used where measured,
    else the nearest measured (``rate_note`` says so). ``eval_s``: seconds of one evaluation
    (None: not counted); ``evaluations``: evaluations per interval (2 where a reference policy
    is scored too). An algorithm without a rate is listed under ``missing``."""
    rows, missing = {}, []
    tasks = len(profile.default_tasks)
    for name in algorithms:
        by_seeds = rates.get(name)
        if not by_seeds:
            missing.append(name)
            continue
        seeds = min(by_seeds, key=lambda s: (abs(s - profile.default_seeds), -s))
        rate = by_seeds[seeds]
        train = profile.train_for(name)
        num_evals = train.num_updates // train.eval_every * (evaluations or {}).get(name, 1)
        train_h = tasks * train.num_updates / rate / 3600
        eval_h = tasks * num_evals * eval_s / 3600 if eval_s is not None else 0.0
        rows[name] = {"updates": train.num_updates, "tasks": tasks, "rate_seeds": seeds,
                      "updates_per_s": rate, "evaluations": num_evals,
                      "train_hours": train_h, "eval_hours": eval_h, "hours": train_h + eval_h,
                      "rate_note": ("" if seeds == profile.default_seeds else
                                    f"{seeds}-seed rate: {profile.default_seeds} seeds not "
                                    f"measured")}
    return {"algorithms": rows, "missing": missing,
            "hours": sum(row["hours"] for row in rows.values()),
            "seeds": profile.default_seeds, "tasks": tasks, "eval_s": eval_s}


def _warm_process(args, measured: list[tuple[str, int]], seconds: float) -> dict:
    """Each measured (algorithm, seeds) interval compiled again in a new process that reads
    the cache this one wrote; stops at ``seconds``. Rows as :func:`warm_compile`'s."""
    if seconds < 5 or not measured:
        return {"skipped": f"{seconds:.0f} s left of the budget" if measured
                else "nothing measured"}
    pairs = [f"{name}:{seeds}" for name, seeds in measured]
    command = [sys.executable, "-m", "benchmarks.device_check", "--warm-only", *pairs,
               "--cache-dir", args.cache_dir, "--updates", str(args.updates),
               "--budget-s", str(seconds)] + (["--tiny"] if args.tiny else [])
    rows, note = [], None
    try:
        # The first process holds its GPU memory: the second takes only what it needs.
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                              cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
        output, note = done.stdout, (None if done.returncode == 0 else
                                     f"exit {done.returncode}: {done.stderr[-300:]}")
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout or ""
        note = f"stopped after {seconds + 60:.0f} s"
    for line in output.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return {"rows": rows, **({"note": note} if note else {})}


def _run_warm_only(args) -> None:
    started = time.perf_counter()
    dataset = synthetic_dataset(10 if args.tiny else 50)
    for pair in args.warm_only:
        if time.perf_counter() - started > args.budget_s:
            break
        name, seeds = pair.split(":")
        print(json.dumps(warm_compile(name, args.tiny, args.updates, dataset, int(seeds))),
              flush=True)


def markdown(result: dict) -> str:
    lines = [f"# Device check: {result['device']}", "",
             f"Commit {result['commit']}" + (" (with uncommitted edits)" if result["dirty"]
                                             else "")
             + f", {result['date']}, {'tiny' if result['tiny'] else 'full'} size, budget "
             f"{result['budget_s']:.0f} s, wall time {result['wall_s']:.0f} s, "
             f"{result['load']}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
             "Training: synthetic hopper-shaped data, init-only work (model fits, warm starts) "
             "cut short; compile = the training interval's lower + compile (cold cache), warm "
             "= the same in a second process reading the persistent cache.", "",
             "| algorithm | seeds | init (s) | compile cold (s) | compile warm (s) | first "
             "call (s) | timed calls x updates | updates/s (each seed) | seed-updates/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    warm = {(row["algorithm"], row["seeds"]): row
            for row in (result.get("warm") or {}).get("rows", [])}
    for row in result["training"]:
        if "skipped" in row:
            lines.append(f"| {row['algorithm']} | {row['seeds']} | skipped: {row['skipped']} "
                         f"| | | | | | |")
            continue
        hot = warm.get((row["algorithm"], row["seeds"]))
        hot_text = (f"{hot['warm_compile_s']:.1f} ({hot['cache_hits']} hits)" if hot
                    else "not measured")
        lines.append(f"| {row['algorithm']} | {row['seeds']} | {row['init_s']:.1f} | "
                     f"{row['compile_s']:.1f} | {hot_text} | {row['first_call_s']:.2f} | "
                     f"{row['steady_calls']} x {row['updates_per_call']} | "
                     f"{row['updates_per_s']:.1f} | {row['seed_updates_per_s']:.1f} |")
    warm_note = (result.get("warm") or {}).get("skipped") or (result.get("warm") or {}).get(
        "note")
    if warm_note:
        lines.append(f"\nWarm-cache compile: {warm_note}.")
    rollout = result["rollout"]
    lines += ["", "MOPO model refresh (one seed): " + (
        f"{rollout['starts']} starts x horizon {rollout['horizon']} in "
        f"{rollout['seconds']:.3f} s ({rollout['model_steps_per_s']:.0f} model steps/s; "
        f"compile {rollout['compile_s']:.1f} s)" if "seconds" in rollout
        else f"skipped: {rollout['skipped']}")]
    env = result["env"]
    if "host_steps_per_s" in env:
        device = (f"MJX {env['device_steps_per_s']:.0f} (batch {env['device_batch']}, "
                  f"{env['device_vs_host']:.1f}x the host; compile and first call "
                  f"{env['device_compile_and_first_s']:.0f} s)" if "device_steps_per_s" in env
                  else f"MJX skipped: {env['device_skipped']}")
        lines.append(f"Hopper steps/s: Gymnasium host {env['host_steps_per_s']:.0f} (batch "
                     f"{env['host_batch']}); {device}; a policy call {env['policy_call_s']*1e3:.2f}"
                     f" ms.")
    else:
        lines.append(f"Environment steps: skipped: {env['skipped']}")
    eval_s = result["eval_s"]
    lines += ["", "Projections: cells one after another on this device; training at the "
              "measured rate plus evaluations; model fits and warm starts not included. "
              + (f"One evaluation ({result['eval_batch']} environments = "
                 f"{FULL.default_seeds} seeds x {FULL.train.eval_episodes} episodes, host "
                 f"backend) is estimated at {eval_s:.1f} s: {EPISODE_LENGTH} steps each costing "
                 f"the batch at the measured host steps/s plus one policy call (an upper bound: "
                 f"no episode ends early); ARMOR scores its reference policy too (2 per "
                 f"interval)." if eval_s is not None else "Evaluation not measured: training "
                 "only.")]
    for title, key in (("(a) The poster's table", "poster"), ("(b) The whole `full` profile",
                                                              "full_profile")):
        block = result["projections"][key]
        lines += ["", f"{title}: {block['tasks']} tasks x {block['seeds']} seeds, "
                  f"**{block['hours']:.1f} h**" + (f" (no rate, not counted: "
                                                   f"{', '.join(block['missing'])})"
                                                   if block["missing"] else ""), "",
                  "| algorithm | updates | updates/s used | evaluations | training (h) | "
                  "evaluation (h) | hours |", "|---|---|---|---|---|---|---|"]
        for name, row in block["algorithms"].items():
            note = f" ({row['rate_note']})" if row["rate_note"] else ""
            lines.append(f"| {name} | {row['updates']:,} | {row['updates_per_s']:.1f}{note} | "
                         f"{row['evaluations']} | {row['train_hours']:.2f} | "
                         f"{row['eval_hours']:.2f} | {row['hours']:.2f} |")
        lines.append(f"| all | | | | | | {block['hours']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=None, choices=sorted(ALGORITHMS),
                        help="default: every registered algorithm (MEASURE_ORDER)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[FULL.default_seeds, 1],
                        help="vmapped seed counts, measured in this order")
    parser.add_argument("--updates", type=int, default=None,
                        help="updates per timed call, whole refresh periods (100; tiny 10)")
    parser.add_argument("--max-calls", type=int, default=20)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny networks, models and data, 60 s budget: a CPU's check")
    parser.add_argument("--env-batch", type=int, default=None, help="MJX batch (1024; tiny 4)")
    parser.add_argument("--env-steps", type=int, default=None, help="steps timed (100; tiny 5)")
    parser.add_argument("--budget-s", type=float, default=None, help="240 s (tiny 60 s)")
    parser.add_argument("--mjx", action="store_true", help="measure MJX at --tiny too")
    parser.add_argument("--no-warm", action="store_true",
                        help="skip the second process (compile with a warm cache)")
    parser.add_argument("--cache-dir", default=None,
                        help="persistent compilation cache (default: a new empty folder, "
                             "removed at the end, so the first compile is cold)")
    parser.add_argument("--out", default="results/device_check")
    parser.add_argument("--warm-only", nargs="+", default=None, metavar="ALGO:SEEDS",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.updates = args.updates or (10 if args.tiny else 100)
    args.env_batch = args.env_batch or (4 if args.tiny else 1024)
    args.env_steps = args.env_steps or (5 if args.tiny else 100)
    args.budget_s = (60.0 if args.tiny else 240.0) if args.budget_s is None else args.budget_s
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    own_cache = args.cache_dir is None
    if own_cache:
        args.cache_dir = tempfile.mkdtemp(prefix="offrl_jax_device_check_cache_")
    enable_compilation_cache(args.cache_dir, min_compile_s=0)
    if args.warm_only:
        _run_warm_only(args)
        return {}
    started = time.perf_counter()
    elapsed = lambda: time.perf_counter() - started  # noqa: E731
    algos = args.algos or [*[name for name in MEASURE_ORDER if name in ALGORITHMS],
                           *sorted(set(ALGORITHMS) - set(MEASURE_ORDER))]
    dataset = synthetic_dataset(10 if args.tiny else 50)
    commit, dirty = git_commit()
    eval_batch = FULL.default_seeds * FULL.train.eval_episodes
    result = {"device": device_name(), "device_count": jax.device_count(),
              "commit": os.environ.get("OFFRL_COMMIT") or commit,
              "dirty": bool(dirty) and not os.environ.get("OFFRL_COMMIT"),
              "versions": {"python": sys.version.split()[0], **library_versions()},
              "load": load_note(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "tiny": args.tiny, "budget_s": args.budget_s, "updates": args.updates,
              "seeds": args.seeds, "eval_batch": eval_batch, "training": []}
    rollout_end = args.budget_s * SHARES["rollout"]
    result["rollout"] = (rollout_time(args.tiny, dataset) if args.budget_s > 0
                         else {"skipped": "a budget of 0 s"})
    print(json.dumps({"rollout": result["rollout"]}), flush=True)
    env_end = rollout_end + args.budget_s * SHARES["env"]
    mjx = ("not at --tiny (its compile takes most of a minute on a small CPU); --mjx measures "
           "it" if args.tiny and not args.mjx else None)
    result["env"] = (env_rates(args.env_batch, args.env_steps, eval_batch, args.tiny,
                               mjx or (f"its share of the budget spent ({elapsed():.0f} s of "
                                       f"{env_end:.0f} s)" if elapsed() > env_end else None))
                     if args.budget_s > 0 else {"skipped": "a budget of 0 s"})
    print(json.dumps({"env": result["env"]}), flush=True)
    result["eval_s"] = (evaluation_seconds(result["env"], eval_batch)
                        if "host_steps_per_s" in result["env"] else None)
    # Training: each algorithm's share is what is left of the training part over the
    # algorithms left, so time one leaves unused passes on.
    training_end = args.budget_s * (1 - SHARES["warm"])
    rates: dict[str, dict[int, float]] = {}
    evaluations: dict[str, int] = {}
    setups: list[float] = []  # each algorithm's first init + compile
    for index, name in enumerate(algos):
        algo_start = elapsed()
        share = max(0.0, (training_end - algo_start) / (len(algos) - index))
        setup = None  # the first measurement's init + compile: the next one's likely cost
        for position, seeds in enumerate(args.seeds):
            row = {"algorithm": name, "seeds": seeds}
            left = algo_start + share - elapsed()
            if elapsed() >= training_end:
                row["skipped"] = (f"the training part of the budget ({training_end:.0f} s of "
                                  f"{args.budget_s:.0f} s) spent")
            elif left <= 0:
                row["skipped"] = f"its share of {share:.1f} s spent"
            elif setup is None and setups and training_end - elapsed() < min(setups):
                row["skipped"] = (f"{training_end - elapsed():.1f} s left of the training "
                                  f"part, the quickest init + compile so far took "
                                  f"{min(setups):.1f} s")
            elif setup is not None and setup > left:
                row["skipped"] = (f"{left:.1f} s left of its share of {share:.1f} s, the "
                                  f"{args.seeds[0]}-seed init + compile took {setup:.1f} s")
            else:
                deadline = started + algo_start + share * (position + 1) / len(args.seeds)
                row = measure_training(name, args.tiny, args.updates, dataset, seeds,
                                       deadline, args.max_calls)
                if setup is None:
                    setup = row["init_s"] + row["compile_s"]
                    setups.append(setup)
                rates.setdefault(name, {})[seeds] = row["updates_per_s"]
                evaluations[name] = row["evaluations_per_interval"]
            result["training"].append(row)
            print(json.dumps(row), flush=True)
    measured = [(row["algorithm"], row["seeds"]) for row in result["training"]
                if "skipped" not in row]
    result["warm"] = ({"skipped": "--no-warm"} if args.no_warm else
                      _warm_process(args, measured, args.budget_s - elapsed()))
    result["projections"] = {
        "poster": project(rates, POSTER, result["eval_s"], evaluations),
        "full_profile": project(rates, FULL.default_algorithms or sorted(ALGORITHMS),
                                result["eval_s"], evaluations)}
    result["cache_events"] = cache_events()
    result["wall_s"] = elapsed()
    if own_cache:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "device_check.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(out / "device_check.md", markdown(result))
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
