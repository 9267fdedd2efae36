"""Throughput of the dynamics ensemble at the paper sizes, on whatever device JAX sees.

Training: 7 members, 4x200 swish, batch 256, on synthetic hopper-like data (obs 11, act 3);
a fixed number of epochs (early stopping disabled), timed after compilation.
Rollouts: 50k start states x horizon 5 with a 2x256 tanh-Gaussian policy (random weights) and
hopper's termination function, then the ring-buffer add; timed after compilation.

    python benchmarks/dynamics_throughput.py [--transitions 20000] [--epochs 3] [--seeds 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax.models import (
    EnsembleConfig,
    add,
    init_buffer,
    init_ensemble,
    rollout,
    train_ensemble,
    train_ensembles,
)
from offrl_jax.models.ensemble import holdout_size
from offrl_jax.tasks import ENV_SPECS

SPEC = ENV_SPECS["hopper"]


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """(first call seconds, compile included; later calls' seconds)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    return first, runs


def synthetic_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, SPEC.obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, SPEC.act_dim)).astype(np.float32)
    mix = rng.normal(size=(SPEC.obs_dim + SPEC.act_dim, SPEC.obs_dim)).astype(np.float32) * 0.1
    next_obs = obs + np.tanh(np.concatenate([obs, act], axis=1) @ mix)
    rew = (obs[:, 5] - 0.1 * np.square(act).sum(1)).astype(np.float32)
    return obs, act, rew, next_obs


def bench_training(args) -> None:
    config = EnsembleConfig(max_epochs=args.epochs, patience=args.epochs + 1)
    data = synthetic_data(args.transitions)
    n_train = args.transitions - holdout_size(args.transitions, config)
    steps_per_epoch = n_train // min(config.batch_size, n_train)
    if args.seeds == 1:
        def run():
            return train_ensemble(jax.random.key(0), *data, config)
    else:
        keys = jax.random.split(jax.random.key(0), args.seeds)

        def run():
            return train_ensembles(keys, *data, config)
    first, runs = timed(run, args.repeats)
    seconds = statistics.median(runs)
    steps = args.epochs * steps_per_epoch * args.seeds
    samples = steps * config.batch_size
    full_epoch_steps = (1_000_000 - 1000) // config.batch_size
    print(f"ensemble training: {config.num_members} members x {config.hidden_sizes}, batch "
          f"{config.batch_size}, {args.seeds} seed(s), {args.transitions} transitions, "
          f"{args.epochs} epochs")
    print(f"  compile + first run {first:.1f} s; run {seconds:.2f} s (median of {len(runs)})")
    print(f"  {steps / seconds:,.0f} minibatch steps/s (all members), "
          f"{samples / seconds:,.0f} samples/s per member, "
          f"{samples * config.num_members / seconds:,.0f} member-samples/s")
    print(f"  => one epoch over 1M transitions ~ "
          f"{full_epoch_steps * args.seeds / (steps / seconds):.1f} s for {args.seeds} seed(s)")


class Policy(nn.Module):
    act_dim: int

    @nn.compact
    def __call__(self, obs):
        x = nn.relu(nn.Dense(256)(obs))
        x = nn.relu(nn.Dense(256)(x))
        mean, log_std = jnp.split(nn.Dense(2 * self.act_dim)(x), 2, axis=-1)
        return mean, jnp.clip(log_std, -5.0, 2.0)


def bench_rollouts(args) -> None:
    model = init_ensemble(jax.random.key(1), SPEC.obs_dim, SPEC.act_dim, EnsembleConfig())
    policy = Policy(SPEC.act_dim)
    policy_params = policy.init(jax.random.key(2), jnp.zeros((1, SPEC.obs_dim)))
    start = np.random.default_rng(3).normal(scale=0.05, size=(args.starts, SPEC.obs_dim))
    start[:, 0] += 1.25  # hopper's standing height: most rollouts survive a few steps
    start = jnp.asarray(start, jnp.float32)
    capacity = args.starts * args.horizon * 5
    buffer = init_buffer(capacity, SPEC.obs_dim, SPEC.act_dim, with_penalty=True)

    @jax.jit
    def rollout_and_store(model, policy_params, buffer, key):
        def policy_fn(key, obs):
            mean, log_std = policy.apply(policy_params, obs)
            return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))

        out = rollout(model, key, start, policy_fn, SPEC.termination_fn, args.horizon,
                      penalty="aleatoric")
        return add(buffer, out.transitions, out.valid), out.num_valid

    first, runs = timed(
        lambda: rollout_and_store(model, policy_params, buffer, jax.random.key(4)),
        args.repeats)
    _, num_valid = rollout_and_store(model, policy_params, buffer, jax.random.key(4))
    seconds = statistics.median(runs)
    computed = args.starts * args.horizon
    print(f"model rollouts: {args.starts} starts x horizon {args.horizon}, 7 members x 4x200, "
          f"2x256 policy, hopper termination, ring-buffer add (capacity {capacity})")
    print(f"  compile + first run {first:.1f} s; run {seconds * 1e3:.1f} ms "
          f"(median of {len(runs)})")
    print(f"  {computed / seconds:,.0f} transitions/s computed "
          f"({int(num_valid)} of {computed} valid with this untrained model)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--starts", type=int, default=50_000)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}, "
          f"{jax.device_count()} device(s)")
    bench_training(args)
    bench_rollouts(args)


if __name__ == "__main__":
    main()
