"""MOPO and COMBO updates/s including their model rollouts, on whatever device JAX sees.

Real sizes for hopper (obs 11, act 3) on a synthetic dataset (no data files): SAC 2x256 (MOPO)
or 3x256 (COMBO), batch 256, a 7-member 4x200 ensemble (trained for one epoch only: training
time is not measured, and rollouts cost the same whatever the weights), rollouts of 50k start
states x horizon 5 every 1000 updates into a 1.25M-row ring buffer per seed.

Each measurement times the training loop's own inner update scan
(:func:`offrl_jax.training.loop.make_interval_fn` without the refresh, vmapped over rows as the
Trainer does) over ``--updates`` updates, and the refresh (one rollout per row, into the ring
buffer) alone; the rate "including rollouts" amortises one refresh over ``refresh_every`` (1000)
updates, as the loop runs them. Rows are seeds, or for the sweep four values of MOPO's lambda
(a state leaf) in the same program. FLOPs are counted from the network shapes (matmuls only).

    python -m benchmarks.mopo_combo_throughput [--algorithms mopo combo] [--seeds 1 2 4 8]
        [--updates 200] [--repeats 2] [--peak-gflops 330] [--overrides JSON]
"""

from __future__ import annotations

import argparse
import json
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, load_note, timed
from offrl_jax.algorithms import combo, mopo
from offrl_jax.data import Dataset
from offrl_jax.parts import rollouts
from offrl_jax.tasks import ENV_SPECS
from offrl_jax.training.loop import make_interval_fn

SPEC = ENV_SPECS["hopper"]
MODULES = {"mopo": mopo, "combo": combo}


def synthetic_dataset(n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    obs = rng.normal(scale=0.05, size=(n, SPEC.obs_dim)).astype(np.float32)
    obs[:, 0] += 1.25  # hopper's standing height: rollouts survive a few steps
    act = rng.uniform(-1, 1, size=(n, SPEC.act_dim)).astype(np.float32)
    mix = rng.normal(size=(SPEC.obs_dim + SPEC.act_dim, SPEC.obs_dim)).astype(np.float32) * 0.01
    next_obs = obs + np.tanh(np.concatenate([obs, act], axis=1) @ mix)
    rew = (1.0 + obs[:, 5] - 0.1 * np.square(act).sum(1)).astype(np.float32)
    zeros = np.zeros(n, np.float32)
    return Dataset.from_arrays(observations=obs, actions=act, rewards=rew,
                               next_observations=next_obs, terminals=zeros, timeouts=zeros,
                               episode_ids=np.arange(n) // 1000, env="hopper")


# --- FLOPs from the network shapes (2 per multiply-add; matmuls only) ----------------------

def mlp_macs(sizes) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def sac_nets(config):
    obs, act = SPEC.obs_dim, SPEC.act_dim
    q = mlp_macs((obs + act, *config.agent.hidden_dims, 1))
    pi = mlp_macs((obs, *config.agent.hidden_dims, 2 * act))
    return q, pi


def update_flops(config, module) -> float:
    """Forward = 1, forward + backward = 3 passes. SAC: target (pi + Q' x num_qs), critic loss
    (Q x num_qs, 3), actor loss (pi, 3; Q x num_qs, 3); COMBO adds the conservative term on
    B x 30 sampled actions (Q x num_qs, 3) and the policy samples at s and s' (pi, 2 x B x 10)."""
    q, pi = sac_nets(config)
    b, n = config.batch_size, config.agent.num_qs
    macs = b * (pi + n * q) + 3 * b * n * q + 3 * b * (pi + n * q)
    if module is combo:
        samples = config.conservative.num_samples
        macs += 3 * b * 3 * samples * n * q + 2 * b * samples * pi + 3 * b * n * q
    return 2.0 * macs


def rollout_flops(config, module) -> float:
    """All members with MOPO's penalty; the elites only without one (COMBO)."""
    obs, act = SPEC.obs_dim, SPEC.act_dim
    member = mlp_macs((obs + act, *config.dynamics.hidden_dims, 2 * (obs + 1)))
    members = config.dynamics.members if module is mopo else config.dynamics.elites
    _, pi = sac_nets(config)
    rows = config.rollouts.batch_size * config.rollouts.horizon
    return 2.0 * rows * (members * member + pi)


# --- measurements -----------------------------------------------------------------------------

def measure(module, config, data, rows: int, updates: int, repeats: int, leaves=None):
    """Seconds per update and per refresh (all rows together) for ``rows`` vmapped rows, and
    the seconds of init (ensemble training, compilation included)."""
    algorithm = module.ALGORITHM.make(config, SPEC)
    keys = jax.random.split(jax.random.PRNGKey(0), rows)
    init = jax.jit(jax.vmap(algorithm.init, in_axes=(0, None)))
    start = time.perf_counter()
    state = jax.block_until_ready(init(keys, data))
    init_s = time.perf_counter() - start
    if leaves:
        state = state.replace(**{k: jnp.asarray(v, jnp.float32) for k, v in leaves.items()})
    refresh = jax.jit(jax.vmap(algorithm.refresh, in_axes=(0, None, 0)))
    # The loop's interval program without its refresh: the inner update scan alone.
    updates_only = types.SimpleNamespace(name=algorithm.name, update=algorithm.update,
                                         refresh=None, refresh_every=0)
    interval = jax.jit(jax.vmap(make_interval_fn(updates_only, updates),
                                in_axes=(0, 0, None, 0)))
    failed = jnp.zeros(rows, bool)
    state = refresh(state, data, keys)  # a filled buffer, as in a running training
    _, refresh_s, _ = timed(lambda: refresh(state, data, keys).rollouts.buffer.size,
                            repeats=repeats)
    _, interval_s, _ = timed(lambda: interval(state, failed, data, keys)[2], repeats=repeats)
    return interval_s / updates, refresh_s, init_s


def report(label, module, config, rows, per_update, per_refresh, init_s, peak) -> None:
    every = config.rollouts.refresh_every
    with_rollouts = rows * every / (every * per_update + per_refresh)
    flops = rows * (every * update_flops(config, module) + rollout_flops(config, module))
    gflops = flops / (every * per_update + per_refresh) / 1e9
    print(f"  {label:>12}: {rows / per_update:8.1f} updates/s without rollouts, "
          f"{with_rollouts:8.1f} with (all rows; {with_rollouts / rows:6.1f} per row); "
          f"refresh {per_refresh:6.2f} s; {gflops:6.1f} GFLOP/s = {100 * gflops / peak:4.1f}% "
          f"of peak; init {init_s:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", default=["mopo", "combo"],
                        choices=sorted(MODULES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--updates", type=int, default=200,
                        help="updates per timed chunk (COMBO uses a tenth)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--overrides", type=json.loads, default={},
                        help='config overrides by path as JSON, e.g. '
                             '\'{"rollouts.batch_size": 5000}\'; '
                             'the default trains the ensemble one epoch only')
    parser.add_argument("--peak-gflops", type=float, default=330.0,
                        help="the device's fp32 peak (default: a 2-core AVX-512 CPU)")
    args = parser.parse_args()
    print(f"device: {device_name()}, jax {jax.__version__}; {load_note()}", flush=True)
    data = synthetic_dataset(args.transitions)
    for name in args.algorithms:
        module = MODULES[name]
        paths = module.ALGORITHM.paths()
        overrides = {"dynamics.max_epochs": 1,
                     **{k: tuple(v) if isinstance(v, list) else v
                        for k, v in args.overrides.items() if k in paths}}
        config = module.ALGORITHM.make_config("hopper-medium", overrides)
        updates = args.updates if module is mopo else max(args.updates // 10, 5)
        print(f"{name}: hidden {config.agent.hidden_dims}, batch {config.batch_size}, ensemble "
              f"{config.dynamics.members} x {config.dynamics.hidden_dims}, rollouts "
              f"{config.rollouts.batch_size} x {config.rollouts.horizon} every "
              f"{config.rollouts.refresh_every} updates in chunks of "
              f"{rollouts.chunk(config.rollouts)} starts, buffer {config.rollouts.capacity} "
              f"rows per row; "
              f"{update_flops(config, module) / 1e9:.2f} GFLOP per update, "
              f"{rollout_flops(config, module) / 1e12:.2f} TFLOP per rollout", flush=True)
        for rows in args.seeds:
            times = measure(module, config, data, rows, updates, args.repeats)
            report(f"{rows} seed(s)", module, config, rows, *times, args.peak_gflops)
        if module is mopo and not args.no_sweep:
            lambdas = [0.5, 1.0, 2.5, 5.0]
            times = measure(module, config, data, len(lambdas), updates, args.repeats,
                            {"penalty_coef": lambdas})
            report("lambda x4", module, config, len(lambdas), *times, args.peak_gflops)
    print(f"done; {load_note()}")


if __name__ == "__main__":
    main()
