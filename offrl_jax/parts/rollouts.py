"""The model-rollout part: rollouts of the current policy in a dynamics model, kept in a ring
buffer, and minibatches mixing them with dataset rows (MBPO's scheme, used by MOPO, COMBO,
MOReL and RAMBO).

- :meth:`Rollouts.refresh`, every ``refresh_every`` updates, OUTSIDE the inner update scan (the
  training loop runs it in an outer loop; ``docs/algorithms.md#pitfall-1``): roll the policy
  out in the model from ``batch_size`` dataset states for ``horizon`` steps, one random elite per
  transition, rollouts ended by the task's termination function, and append the valid
  transitions to a ring buffer holding the last ``retain`` refreshes' worth. With an
  uncertainty ``penalty`` every member predicts and each row stores its raw u(s, a);
- :func:`sample`: ``num_real`` dataset rows and the rest model rows.

Rollouts are computed in chunks of ``chunk_size`` start states (a ``lax.map`` over chunks): the
result is the same kind of sample, but the ensemble's activations of one chunk stay in cache on
a CPU instead of streaming 7 x 50k x 200 floats per layer through memory. The default
(``None``) picks by backend: chunks of :data:`CPU_ROLLOUT_CHUNK` on a CPU (measured best of
250..10k on a 2-core Xeon: 2.86 s per 50k x 5 MOPO rollout against 3.03 s with 1000 and ~3.5 s
with 10k), all start states at once on an accelerator, where one chunk of 2000 rows would leave
most of the device idle. Defaults: ``docs/algorithms.md#model-rollouts``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from offrl_jax.data import sample_batch
from offrl_jax.models import EnsembleState, rollout
from offrl_jax.models.buffer import ModelBuffer, Transitions, init_buffer
from offrl_jax.models.buffer import add as buffer_add
from offrl_jax.models.buffer import sample as buffer_sample

# Start states per rollout chunk on a CPU (see the module docstring).
CPU_ROLLOUT_CHUNK = 2_000


@dataclasses.dataclass(frozen=True)
class Config:
    """``buffer_capacity=None`` means ``batch_size * horizon * retain`` rows (per seed).
    ``chunk_size`` only changes how a rollout is computed (memory and speed): 0 = all start
    states at once, None = by backend (:func:`chunk`)."""

    refresh_every: int = 1000
    batch_size: int = 50_000  # start states per refresh
    horizon: int = 5
    retain: int = 5
    buffer_capacity: int | None = None
    chunk_size: int | None = None

    def __post_init__(self):
        for name in ("refresh_every", "batch_size", "horizon", "retain"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollouts.{name} must be >= 1, found {getattr(self, name)}")
        if self.chunk_size is not None and self.chunk_size < 0:
            raise ValueError(f"rollouts.chunk_size must be None (by backend) or >= 0 (0: no "
                             f"chunks), found {self.chunk_size}")

    @property
    def capacity(self) -> int:
        """Model-buffer rows per seed."""
        if self.buffer_capacity is not None:
            return self.buffer_capacity
        return self.batch_size * self.horizon * self.retain


@struct.dataclass
class State:
    """The model buffer and rollout statistics of one seed.

    buffer: ring of model transitions, leaves (capacity, ...); ``penalties`` holds the raw
        uncertainty u(s, a) when the rollouts have a ``penalty``.
    refreshes: () int32, rollouts run so far; rows_added: () int32, valid rows written so far.
    rollout_length: () float32, mean valid steps per rollout of the last refresh.
    rollout_uncertainty: () float32, mean u over the last refresh's valid rows (0 without penalty).
    """

    buffer: ModelBuffer
    refreshes: jax.Array
    rows_added: jax.Array
    rollout_length: jax.Array
    rollout_uncertainty: jax.Array


def elites_only(ensemble: EnsembleState) -> EnsembleState:
    """The ensemble cut down to its elites (in elite order), for rollouts without an
    uncertainty penalty: each transition still uses one uniformly drawn elite, but the members
    that are never sampled are not computed (5 of 7 members' work with the default sizes)."""
    num_elites = ensemble.elite_indices.shape[0]
    params = jax.tree_util.tree_map(lambda p: p[ensemble.elite_indices], ensemble.params)
    config = dataclasses.replace(ensemble.config, num_members=num_elites)
    return ensemble.replace(params=params, config=config,
                            elite_indices=jnp.arange(num_elites, dtype=jnp.int32))


def chunk(config: Config) -> int:
    """Start states per rollout chunk: the configured size, or by backend when it is None
    (:data:`CPU_ROLLOUT_CHUNK` on a CPU, all of them on an accelerator); never more than
    ``batch_size``."""
    num_starts = config.batch_size
    size = config.chunk_size
    if size is None:
        size = CPU_ROLLOUT_CHUNK if jax.default_backend() == "cpu" else 0
    return min(size or num_starts, num_starts)


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """Rollouts for one config and environment (``spec``: ``obs_dim``, ``act_dim``,
    ``termination_fn``); ``penalty`` names the uncertainty each row stores
    (:data:`offrl_jax.models.PENALTY_NAMES`), or None."""

    config: Config
    spec: Any
    penalty: str | None = None

    def init(self) -> State:
        """An empty buffer."""
        buffer = init_buffer(self.config.capacity, self.spec.obs_dim, self.spec.act_dim,
                             with_penalty=self.penalty is not None)
        zero = jnp.zeros((), jnp.float32)
        return State(buffer, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), zero, zero)

    def refresh(self, state: State, model: EnsembleState, dataset, key, policy_fn,
                transform: Callable | None = None) -> State:
        """One rollout of ``config.batch_size`` x ``config.horizon`` in ``model`` into the
        buffer (:meth:`refresh_rows` without the rows)."""
        return self.refresh_rows(state, model, dataset, key, policy_fn, transform)[0]

    def refresh_rows(self, state: State, model: EnsembleState, dataset, key, policy_fn,
                     transform: Callable | None = None
                     ) -> tuple[State, Transitions, jax.Array]:
        """One rollout of ``config.batch_size`` x ``config.horizon`` in ``model`` into the
        buffer; returns ``(state, transitions, valid)``, the new state and the rows it offered
        the buffer (leaves ``(chunks, horizon, chunk, ...)``, ``valid`` ``(chunks, horizon,
        chunk)``, padding starts already masked out), for an algorithm's own statistics of a
        refresh.

        ``policy_fn(key, obs (n, obs_dim)) -> actions (n, act_dim)`` is the current stochastic
        policy. Start states are drawn uniformly (with replacement) from the dataset.
        ``transform(transitions, valid) -> (transitions, valid)``, on leaves ``(horizon,
        starts, ...)``, edits each rollout before it is stored (MOReL halts rollouts in unknown
        states).
        """
        config = self.config
        num_starts = config.batch_size
        size = chunk(config)
        num_chunks = -(-num_starts // size)
        start_key, rollout_key = jax.random.split(key)
        rows = jax.random.randint(start_key, (num_chunks * size,), 0, dataset.size)
        starts = jnp.take(dataset.observations, rows, axis=0).reshape(num_chunks, size, -1)
        # The last chunk may be padded with extra starts; their rows are masked out.
        wanted = (jnp.arange(num_chunks * size) < num_starts).reshape(num_chunks, size)

        # A penalty needs every member's prediction; without one only the elites are sampled.
        members = model if self.penalty is not None else elites_only(model)

        def one_chunk(args):
            chunk_key, chunk_starts = args
            out = rollout(members, chunk_key, chunk_starts, policy_fn,
                          self.spec.termination_fn, config.horizon, penalty=self.penalty)
            if transform is None:
                return out.transitions, out.valid
            return transform(out.transitions, out.valid)

        transitions, valid = jax.lax.map(
            one_chunk, (jax.random.split(rollout_key, num_chunks), starts))
        # (chunks, horizon, chunk, ...): the ring buffer only needs the valid mask, not the order.
        valid = valid & wanted[:, None, :]
        num_valid = jnp.sum(valid, dtype=jnp.int32)
        if self.penalty is None:
            uncertainty = jnp.zeros((), jnp.float32)
        else:
            uncertainty = (jnp.sum(jnp.where(valid, transitions.penalties, 0.0))
                           / jnp.maximum(num_valid, 1))
        return state.replace(
            buffer=buffer_add(state.buffer, transitions, valid),
            refreshes=state.refreshes + 1,
            rows_added=state.rows_added + num_valid,
            rollout_length=num_valid.astype(jnp.float32) / num_starts,
            rollout_uncertainty=uncertainty,
        ), transitions, valid


def num_real(batch_size: int, real_ratio: float) -> int:
    """Dataset rows per minibatch: ``round(batch_size * real_ratio)``."""
    return int(round(batch_size * real_ratio))


def sample(state: State, dataset, key, batch_size: int, real_ratio: float
           ) -> tuple[Transitions, Transitions, dict[str, jax.Array]]:
    """``(real, model, metrics)``: :func:`num_real` dataset rows and the rest from the model
    buffer (raw model rewards; ``model.penalties`` is the stored u(s, a) when there is one),
    and metrics of the model rows. The buffer must have been refreshed at least once (an empty
    buffer samples NaN, see :mod:`offrl_jax.models.buffer`)."""
    real_count = num_real(batch_size, real_ratio)
    real_key, model_key = jax.random.split(key)
    real = sample_batch(dataset, real_key, real_count)
    fake = buffer_sample(state.buffer, model_key, batch_size - real_count)
    metrics = {"model_reward": jnp.mean(fake.rewards) if fake.rewards.size else jnp.zeros(())}
    if fake.penalties is not None:
        metrics["model_uncertainty"] = (jnp.mean(fake.penalties) if fake.penalties.size
                                        else jnp.zeros(()))
    real = Transitions(real.observations, real.actions, real.rewards, real.next_observations,
                       real.terminals)
    return real, fake, metrics


def concatenate(real: Transitions, model: Transitions) -> Transitions:
    """One minibatch: the dataset rows first, then the model rows (``penalties`` dropped)."""
    cat = lambda a, b: jnp.concatenate([a, b.astype(a.dtype)], axis=0)  # noqa: E731
    return Transitions(
        observations=cat(real.observations, model.observations),
        actions=cat(real.actions, model.actions),
        rewards=cat(real.rewards, model.rewards),
        next_observations=cat(real.next_observations, model.next_observations),
        terminals=cat(real.terminals, model.terminals),
    )


def metrics(state: State) -> dict[str, jax.Array]:
    """The buffer and last-rollout statistics, reported with every update's metrics."""
    return {"model_buffer_size": state.buffer.size.astype(jnp.float32),
            "model_refreshes": state.refreshes.astype(jnp.float32),
            "rollout_length": state.rollout_length,
            "rollout_uncertainty": state.rollout_uncertainty}
