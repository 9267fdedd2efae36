"""The model-based pieces MOPO, COMBO, MOReL and RAMBO share (shared/REFERENCE.md section 2).

1. ``init``: train a dynamics ensemble on the dataset (:func:`init_model`), one per seed, or take
   the one :func:`pretrain` fitted (``init(..., pretrained=...)``). The ensemble's key is
   :func:`model_key` of the init key in every algorithm, so for one seed, dataset and ensemble
   config all four train the IDENTICAL ensemble, and :func:`pretrain_id` names it: the training
   loop fits it once per seed and shares it (:mod:`offrl_jax.models.store`);
2. ``refresh``, every ``refresh_every`` updates, OUTSIDE the inner update scan (the training loop
   runs it in an outer loop, REFERENCE s.5 mistake 7): roll the current stochastic policy out in
   the model from ``rollout_batch_size`` dataset states for ``rollout_horizon`` steps, one random
   elite per transition, rollouts ended by the task's termination function, and append the valid
   transitions to a ring buffer holding the last ``retain_rollouts`` rollouts' worth
   (:func:`refresh_buffer`);
3. ``update``: minibatches of ``real_ratio`` dataset rows and the rest model rows, the model rows'
   rewards optionally penalised ``r - coef * u(s, a)`` (:func:`mixed_batch`).

Everything is a pure function of explicit state, so seeds (and hyperparameters that live in the
state as leaves, e.g. MOPO's ``penalty_coef``) vmap: :func:`sweep_init` builds the states of a
sweep in one program, and the training loop's interval function runs them in one program.

Rollouts are computed in chunks of ``rollout_chunk_size`` start states (a ``lax.map`` over
chunks): the result is the same kind of sample, but the ensemble's activations of one chunk stay
in cache on a CPU instead of streaming 7 x 50k x 200 floats per layer through memory. The
default (``None``) picks by backend: chunks of :data:`CPU_ROLLOUT_CHUNK` on a CPU (measured best
of 250..10k on a 2-core Xeon: 2.86 s per 50k x 5 MOPO rollout against 3.03 s with 1000 and
~3.5 s with 10k), all start states at once on an accelerator, where one chunk of 2000 rows would
leave most of the device idle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from offrl_jax.algorithms import sac
from offrl_jax.data import sample_batch
from offrl_jax.models import EnsembleConfig, EnsembleState, rollout, train_ensemble
from offrl_jax.models.buffer import ModelBuffer, Transitions, init_buffer
from offrl_jax.models.buffer import add as buffer_add
from offrl_jax.models.buffer import sample as buffer_sample

# Start states per rollout chunk on a CPU (see the module docstring).
CPU_ROLLOUT_CHUNK = 2_000

# fold_in tag of the dynamics model's key. fold_in(key, i) equals split(key, n)[i] (JAX's
# partitionable threefry), so a small tag would collide with the keys algorithms split from the
# same init key; this one ("MODL") is far above any split count.
MODEL_KEY_TAG = 0x4D4F444C

# MBPO/MOPO per-layer L2 weights for the 4x200 ensemble (REFERENCE s.2).
_PAPER_WEIGHT_DECAYS = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)


@dataclasses.dataclass(frozen=True)
class ModelBasedConfig:
    """The dynamics ensemble, rollout and minibatch settings shared by MOPO, COMBO, MOReL and
    RAMBO.

    ``ensemble_weight_decays=None`` uses the paper's per-layer values for 4 hidden layers and
    ``linspace(2.5e-5, 1e-4)`` over the layers for any other depth. ``buffer_capacity=None``
    means ``rollout_batch_size * rollout_horizon * retain_rollouts`` (per seed).
    ``rollout_chunk_size`` only changes how the rollout is computed (memory and speed): 0 = all
    start states at once, None = by backend (:func:`rollout_chunk`).
    """

    # Dynamics ensemble, trained in init (or pretrain) on the dataset.
    ensemble_members: int = 7
    ensemble_elites: int = 5
    ensemble_hidden_dims: tuple[int, ...] = (200, 200, 200, 200)
    ensemble_weight_decays: tuple[float, ...] | None = None
    ensemble_lr: float = 1e-3
    ensemble_batch_size: int = 256
    ensemble_max_epochs: int = 1000
    ensemble_patience: int = 5
    ensemble_max_holdout: int = 1000
    # Model rollouts into the ring buffer.
    refresh_every: int = 1000
    rollout_batch_size: int = 50_000
    rollout_horizon: int = 5
    retain_rollouts: int = 5
    buffer_capacity: int | None = None
    rollout_chunk_size: int | None = None
    # Minibatches: real_ratio of the rows come from the dataset, the rest from the buffer.
    batch_size: int = 256
    real_ratio: float = 0.05

    def __post_init__(self):
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"{type(self).__name__}.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")
        for name in ("refresh_every", "rollout_batch_size", "rollout_horizon", "retain_rollouts",
                     "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, found "
                                 f"{getattr(self, name)}")
        if self.rollout_chunk_size is not None and self.rollout_chunk_size < 0:
            raise ValueError(f"{type(self).__name__}.rollout_chunk_size must be None (by "
                             f"backend) or >= 0 (0: no chunks), found {self.rollout_chunk_size}")

    def ensemble_config(self) -> EnsembleConfig:
        decays = self.ensemble_weight_decays
        layers = len(self.ensemble_hidden_dims) + 1
        if decays is None:
            decays = (_PAPER_WEIGHT_DECAYS if layers == len(_PAPER_WEIGHT_DECAYS) else
                      tuple(float(d) for d in np.linspace(2.5e-5, 1e-4, layers)))
        return EnsembleConfig(
            num_members=self.ensemble_members, num_elites=self.ensemble_elites,
            hidden_sizes=tuple(self.ensemble_hidden_dims), weight_decays=tuple(decays),
            learning_rate=self.ensemble_lr, batch_size=self.ensemble_batch_size,
            max_holdout=self.ensemble_max_holdout, max_epochs=self.ensemble_max_epochs,
            patience=self.ensemble_patience)

    def sac_config(self) -> sac.SACConfig:
        """The SAC part: the SAC fields a subclass declares (SAC's defaults for the others)."""
        return sac.config_from(self)

    @property
    def capacity(self) -> int:
        """Model-buffer rows per seed."""
        if self.buffer_capacity is not None:
            return self.buffer_capacity
        return self.rollout_batch_size * self.rollout_horizon * self.retain_rollouts

    @property
    def num_real(self) -> int:
        """Dataset rows per minibatch: ``round(batch_size * real_ratio)``; they come first."""
        return int(round(self.batch_size * self.real_ratio))


@struct.dataclass
class ModelBasedState:
    """The trained ensemble, the model buffer and rollout statistics of one seed.

    ensemble: the trained :class:`EnsembleState`.
    buffer: ring of model transitions, leaves (capacity, ...); ``penalties`` holds the raw
        uncertainty u(s, a) when ``penalty`` is set (the coefficient is applied when sampling).
    refreshes: () int32, rollouts run so far; rows_added: () int32, valid rows written so far.
    rollout_length: () float32, mean valid steps per rollout of the last refresh.
    rollout_uncertainty: () float32, mean u over the last refresh's valid rows (0 without penalty).
    termination_fn, penalty: static (the task's termination function; the uncertainty's name).
    """

    ensemble: EnsembleState
    buffer: ModelBuffer
    refreshes: jax.Array
    rows_added: jax.Array
    rollout_length: jax.Array
    rollout_uncertainty: jax.Array
    termination_fn: Callable = struct.field(pytree_node=False)
    penalty: str | None = struct.field(pytree_node=False)


def model_state_from(ensemble: EnsembleState, spec, config: ModelBasedConfig,
                     penalty: str | None) -> ModelBasedState:
    """An empty-buffer state around an already trained (or hand-made) ensemble."""
    buffer = init_buffer(config.capacity, spec.obs_dim, spec.act_dim,
                         with_penalty=penalty is not None)
    zero = jnp.zeros((), jnp.float32)
    return ModelBasedState(ensemble, buffer, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                           zero, zero, spec.termination_fn, penalty)


def model_key(key) -> jax.Array:
    """The dynamics model's training key from an algorithm's init key: the same derivation in
    every model-based algorithm (ARMOR's single model too), so equal seeds train equal models.
    Other init keys are split from ``key`` and never collide with this one."""
    return jax.random.fold_in(key, MODEL_KEY_TAG)


def _check_dataset(spec, dataset) -> None:
    if dataset is None:
        raise ValueError("model-based algorithms train their dynamics ensemble in init: pass the "
                         "dataset (init(key, spec, config, dataset))")
    if (dataset.obs_dim, dataset.act_dim) != (spec.obs_dim, spec.act_dim):
        raise ValueError(f"dataset has obs/act dims ({dataset.obs_dim}, {dataset.act_dim}) but "
                         f"the env spec {getattr(spec, 'name', spec)!r} expects "
                         f"({spec.obs_dim}, {spec.act_dim})")


def fit_model(key, spec, dataset, ensemble_config: EnsembleConfig) -> EnsembleState:
    """Train a dynamics ensemble (or ARMOR's single model) on the whole dataset (holdout split
    inside) with :func:`model_key` of the init key ``key``. Jittable, vmappable over ``key``
    with the dataset shared."""
    _check_dataset(spec, dataset)
    return train_ensemble(model_key(key), dataset.observations, dataset.actions,
                          dataset.rewards, dataset.next_observations, ensemble_config)


def model_pretrain_id(ensemble_config: EnsembleConfig) -> str:
    """What a :func:`fit_model` result depends on besides the dataset, env and key: the fit
    (bump the version when :func:`fit_model` or ``train_ensemble`` change what they compute)
    and every ensemble setting. Equal ids mean bit-identical models for equal inputs."""
    return f"fit_model/v1:{ensemble_config!r}"


def pretrain(key, spec, config: ModelBasedConfig, dataset) -> EnsembleState:
    """``Algorithm.pretrain``: the ensemble ``init(key, spec, config, dataset)`` would train."""
    return fit_model(key, spec, dataset, config.ensemble_config())


def pretrain_id(config: ModelBasedConfig) -> str:
    """``Algorithm.pretrain_id``: equal for any two configs with equal ensemble settings, so
    MOPO, COMBO, MOReL and RAMBO share one ensemble per seed."""
    return model_pretrain_id(config.ensemble_config())


def init_model(key, spec, config: ModelBasedConfig, dataset, penalty: str | None,
               pretrained: EnsembleState | None = None) -> ModelBasedState:
    """The model part of an init: the ensemble (``pretrained``, or :func:`pretrain` of the init
    key ``key``) and an empty buffer.

    ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``. Jittable and vmappable over
    ``key`` (and ``pretrained``) with the dataset shared.
    """
    if pretrained is None:
        pretrained = pretrain(key, spec, config, dataset)
    elif (pretrained.obs_dim, pretrained.act_dim) != (spec.obs_dim, spec.act_dim):
        raise ValueError(f"pretrained ensemble has obs/act dims ({pretrained.obs_dim}, "
                         f"{pretrained.act_dim}) but the env spec "
                         f"{getattr(spec, 'name', spec)!r} expects "
                         f"({spec.obs_dim}, {spec.act_dim})")
    return model_state_from(pretrained, spec, config, penalty)


def init_model_and_agent(key, spec, config: ModelBasedConfig, dataset, penalty: str | None,
                         pretrained: EnsembleState | None = None, extra_keys: int = 0):
    """The shared part of a model-based init: ``(model, sac_state, keys)`` with the model of
    :func:`init_model`, a SAC agent from ``split(key, 2 + extra_keys)[1]`` and the
    ``extra_keys`` keys after it for the algorithm's own use (slot 0 is unused: the model's key
    is :func:`model_key` of ``key``)."""
    model = init_model(key, spec, config, dataset, penalty, pretrained)
    keys = jax.random.split(key, 2 + extra_keys)
    return model, sac.init(keys[1], spec, config.sac_config()), keys[2:]


def sac_policy_fn(sac_state: sac.SACState) -> Callable:
    """``policy_fn(key, obs) -> actions`` sampling the SAC agent's current stochastic policy."""
    def policy_fn(key, obs):
        return sac.policy_sample(sac_state, sac_state.actor_params, obs, key)[0]

    return policy_fn


def elites_only(ensemble: EnsembleState) -> EnsembleState:
    """The ensemble cut down to its elites (in elite order), for rollouts without an
    uncertainty penalty: each transition still uses one uniformly drawn elite, but the members
    that are never sampled are not computed (5 of 7 members' work with the default sizes)."""
    num_elites = ensemble.elite_indices.shape[0]
    params = jax.tree_util.tree_map(lambda p: p[ensemble.elite_indices], ensemble.params)
    config = dataclasses.replace(ensemble.config, num_members=num_elites)
    return ensemble.replace(params=params, config=config,
                            elite_indices=jnp.arange(num_elites, dtype=jnp.int32))


def rollout_chunk(config: ModelBasedConfig) -> int:
    """Start states per rollout chunk: the configured size, or by backend when it is None
    (:data:`CPU_ROLLOUT_CHUNK` on a CPU, all of them on an accelerator); never more than
    ``rollout_batch_size``."""
    num_starts = config.rollout_batch_size
    chunk = config.rollout_chunk_size
    if chunk is None:
        chunk = CPU_ROLLOUT_CHUNK if jax.default_backend() == "cpu" else 0
    return min(chunk or num_starts, num_starts)


def refresh_buffer(model: ModelBasedState, dataset, key, policy_fn,
                   config: ModelBasedConfig, transform: Callable | None = None
                   ) -> ModelBasedState:
    """One rollout of ``config.rollout_batch_size`` x ``config.rollout_horizon`` into the buffer.

    ``policy_fn(key, obs (n, obs_dim)) -> actions (n, act_dim)`` is the current stochastic
    policy. Start states are drawn uniformly (with replacement) from the dataset.
    ``transform(transitions, valid) -> (transitions, valid)``, on leaves ``(horizon, starts,
    ...)``, edits each rollout before it is stored (MOReL halts rollouts in unknown states).
    """
    num_starts = config.rollout_batch_size
    chunk = rollout_chunk(config)
    num_chunks = -(-num_starts // chunk)
    start_key, rollout_key = jax.random.split(key)
    rows = jax.random.randint(start_key, (num_chunks * chunk,), 0, dataset.size)
    starts = jnp.take(dataset.observations, rows, axis=0).reshape(num_chunks, chunk, -1)
    # The last chunk may be padded with extra starts; their rows are masked out.
    wanted = (jnp.arange(num_chunks * chunk) < num_starts).reshape(num_chunks, chunk)

    # A penalty needs every member's prediction; without one only the elites are sampled.
    ensemble = model.ensemble if model.penalty is not None else elites_only(model.ensemble)

    def one_chunk(args):
        chunk_key, chunk_starts = args
        out = rollout(ensemble, chunk_key, chunk_starts, policy_fn, model.termination_fn,
                      config.rollout_horizon, penalty=model.penalty)
        if transform is None:
            return out.transitions, out.valid
        return transform(out.transitions, out.valid)

    transitions, valid = jax.lax.map(
        one_chunk, (jax.random.split(rollout_key, num_chunks), starts))
    # (chunks, horizon, chunk, ...): the ring buffer only needs the valid mask, not the order.
    valid = valid & wanted[:, None, :]
    num_valid = jnp.sum(valid, dtype=jnp.int32)
    if model.penalty is None:
        uncertainty = jnp.zeros((), jnp.float32)
    else:
        uncertainty = (jnp.sum(jnp.where(valid, transitions.penalties, 0.0))
                       / jnp.maximum(num_valid, 1))
    return model.replace(
        buffer=buffer_add(model.buffer, transitions, valid),
        refreshes=model.refreshes + 1,
        rows_added=model.rows_added + num_valid,
        rollout_length=num_valid.astype(jnp.float32) / num_starts,
        rollout_uncertainty=uncertainty,
    )


def mixed_batch(model: ModelBasedState, dataset, key, config: ModelBasedConfig,
                penalty_coef=0.0) -> tuple[Transitions, dict[str, jax.Array]]:
    """A minibatch of ``config.batch_size`` rows: the first ``config.num_real`` from the
    dataset, the rest from the model buffer with rewards ``r - penalty_coef * u(s, a)``.

    Returns the batch (``Transitions`` with ``penalties=None``; leaves (batch, ...)) and metrics
    of its model rows. The buffer must have been refreshed at least once (an empty buffer
    samples NaN, see :mod:`offrl_jax.models.buffer`).
    """
    num_real = config.num_real
    real_key, model_key = jax.random.split(key)
    real = sample_batch(dataset, real_key, num_real)
    fake = buffer_sample(model.buffer, model_key, config.batch_size - num_real)
    fake_rewards = fake.rewards
    metrics = {"model_reward": jnp.mean(fake.rewards) if fake.rewards.size else jnp.zeros(())}
    if fake.penalties is not None:
        fake_rewards = fake.rewards - penalty_coef * fake.penalties
        metrics["model_uncertainty"] = (jnp.mean(fake.penalties) if fake.penalties.size
                                        else jnp.zeros(()))
    cat = lambda a, b: jnp.concatenate([a, b.astype(a.dtype)], axis=0)  # noqa: E731
    batch = Transitions(
        observations=cat(real.observations, fake.observations),
        actions=cat(real.actions, fake.actions),
        rewards=cat(real.rewards, fake_rewards),
        next_observations=cat(real.next_observations, fake.next_observations),
        terminals=cat(real.terminals, fake.terminals),
    )
    return batch, metrics


def real_rows(batch: Transitions, config: ModelBasedConfig) -> Transitions:
    """The dataset rows of a :func:`mixed_batch` (its first ``config.num_real`` rows)."""
    return jax.tree_util.tree_map(lambda x: x[:config.num_real], batch)


def model_metrics(model: ModelBasedState) -> dict[str, jax.Array]:
    """The buffer and last-rollout statistics, reported with every update's metrics."""
    return {"model_buffer_size": model.buffer.size.astype(jnp.float32),
            "model_refreshes": model.refreshes.astype(jnp.float32),
            "rollout_length": model.rollout_length,
            "rollout_uncertainty": model.rollout_uncertainty}


def sweep_init(init_fn: Callable, keys, spec, config, dataset,
               leaves: Mapping[str, jax.Array]):
    """States of a hyperparameter sweep, built in one compiled program.

    Row i is ``init_fn(keys[i], spec, config, dataset)`` with each named state leaf set to
    ``leaves[name][i]`` (e.g. ``{"penalty_coef": jnp.array([0.5, 1, 2.5, 5])}`` for MOPO);
    ``keys`` (rows, 2). Every leaf gets a leading rows axis, like seeds; the training loop's
    interval function vmapped over that axis runs the whole sweep as one program.
    """
    leaves = {name: jnp.asarray(value, jnp.float32) for name, value in leaves.items()}

    def one(key, values, data):
        return init_fn(key, spec, config, data).replace(**values)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))(keys, leaves, dataset)


def refresh_with_policy(state, dataset, key, transform: Callable | None = None):
    """``refresh`` of an algorithm state with ``sac``, ``model`` and ``config`` fields: rollouts
    of its current SAC policy into its model buffer (see :func:`refresh_buffer`)."""
    return state.replace(model=refresh_buffer(state.model, dataset, key,
                                              sac_policy_fn(state.sac), state.config, transform))


def sac_update_on_mixed_batch(state, dataset, key, penalty_coef=0.0):
    """One SAC step on a :func:`mixed_batch` (model rewards penalised by ``penalty_coef``), for
    a state with ``sac``, ``model`` and ``config`` fields; returns ``(state, metrics)``."""
    batch_key, sac_key = jax.random.split(key)
    batch, batch_metrics = mixed_batch(state.model, dataset, batch_key, state.config,
                                       penalty_coef)
    sac_state, metrics = sac.update(state.sac, batch, sac_key)
    return state.replace(sac=sac_state), {**metrics, **batch_metrics,
                                          **model_metrics(state.model)}
