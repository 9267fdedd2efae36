"""A Gaussian dynamics ensemble predicting ``[next_obs - obs, reward]``
(``docs/algorithms.md#dynamics-ensemble``).

Each member is one MLP (swish hidden layers) that outputs a mean and a log-variance per output
dim; the log-variance is soft-clamped between learned per-dim bounds. Members are a leading
parameter axis (``vmap`` over one member's parameters), so the whole ensemble is one pytree.

Training (:func:`train_ensemble`) runs in one compiled program: a ``lax.while_loop`` over epochs
whose carry holds the early-stopping counter, and a ``lax.scan`` over minibatches inside each
epoch. Its data arguments are plain arrays (any dataset pytree's fields), and it can be vmapped
over keys with the data shared: see :func:`train_ensembles`.

Conventions that papers leave open, chosen here and configurable where it matters:

- Weight decay is an L2 term in the loss, ``decay_l * 0.5 * ||W_l||^2`` on each layer's kernel
  (the ``tf.nn.l2_loss`` convention of MBPO's code), not decoupled AdamW decay.
- Each epoch shuffles every member's bootstrap sample and drops the remainder that does not fill
  a whole minibatch (static shapes); the remainder differs every epoch.
- "Improves by more than 1%" is ``mse < best * (1 - improvement_threshold)`` per member.
- Targets are not standardised; inputs ``[obs, act]`` are, with the train split's statistics.
- Holdout NLL is the Gaussian negative log-likelihood per output dim, in nats.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Settings of the dynamics ensemble; defaults are the MBPO/MOPO ones
    (``docs/algorithms.md#dynamics-ensemble``).

    ``weight_decays`` has one entry per weight layer: ``len(hidden_sizes) + 1``.
    ``max_epochs`` caps training (and sizes the per-epoch holdout history).
    """

    num_members: int = 7
    num_elites: int = 5
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    learning_rate: float = 1e-3
    batch_size: int = 256
    holdout_fraction: float = 0.2
    max_holdout: int = 1000
    bootstrap: bool = True
    max_epochs: int = 1000
    patience: int = 5
    improvement_threshold: float = 0.01
    init_max_logvar: float = 0.5
    init_min_logvar: float = -10.0
    logvar_bound_coef: float = 0.01

    def __post_init__(self):
        if len(self.weight_decays) != len(self.hidden_sizes) + 1:
            raise ValueError(
                f"EnsembleConfig.weight_decays has {len(self.weight_decays)} entries but the "
                f"network has {len(self.hidden_sizes) + 1} weight layers "
                f"(hidden_sizes={self.hidden_sizes}); give one decay per layer"
            )
        if not 0 < self.num_elites <= self.num_members:
            raise ValueError(
                f"EnsembleConfig: num_elites must be in [1, num_members={self.num_members}], "
                f"found {self.num_elites}"
            )
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError("EnsembleConfig: max_epochs, patience and batch_size must be >= 1")


# A config has no arrays: jit and vmap carry it as static structure, so it can be passed
# positionally to jitted functions (and with any in_axes to vmap) without static_argnames.
jax.tree_util.register_static(EnsembleConfig)


class GaussianMLP(nn.Module):
    """One member: standardised ``[obs, act]`` -> (mean, soft-clamped logvar), each (..., out)."""

    hidden_sizes: tuple[int, ...]
    output_dim: int
    init_max_logvar: float
    init_min_logvar: float

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden_sizes):
            x = nn.swish(nn.Dense(width, name=f"hidden_{i}")(x))
        out = nn.Dense(2 * self.output_dim, name="output")(x)
        mean, raw_logvar = jnp.split(out, 2, axis=-1)
        max_logvar = self.param(
            "max_logvar", nn.initializers.constant(self.init_max_logvar), (self.output_dim,))
        min_logvar = self.param(
            "min_logvar", nn.initializers.constant(self.init_min_logvar), (self.output_dim,))
        logvar = max_logvar - jax.nn.softplus(max_logvar - raw_logvar)
        logvar = min_logvar + jax.nn.softplus(logvar - min_logvar)
        return mean, logvar


@struct.dataclass
class EnsembleState:
    """A trained (or initialised) ensemble. M members, D = obs_dim + 1 outputs.

    params: member-stacked parameters, every leaf (M, ...).
    input_mean, input_std: (obs_dim + act_dim,) train-split statistics of ``[obs, act]``.
    elite_indices: (num_elites,) int32, members sorted by holdout MSE, best first.
    holdout_indices: (n_holdout,) int32 rows of the training data held out (empty if untrained).
    holdout_mse, holdout_nll: (M,) of the kept (best) weights; NaN if untrained.
    holdout_mse_per_dim: (M, D).
    mse_history: (max_epochs, M) holdout MSE after each epoch; NaN after the last epoch run.
    epochs_trained: () int32.
    A vmapped training gives every leaf a leading seeds axis.
    """

    params: Any
    input_mean: jax.Array
    input_std: jax.Array
    elite_indices: jax.Array
    holdout_indices: jax.Array
    holdout_mse: jax.Array
    holdout_nll: jax.Array
    holdout_mse_per_dim: jax.Array
    mse_history: jax.Array
    epochs_trained: jax.Array
    config: EnsembleConfig = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)


def _network(config: EnsembleConfig, obs_dim: int) -> GaussianMLP:
    return GaussianMLP(config.hidden_sizes, obs_dim + 1, config.init_max_logvar,
                       config.init_min_logvar)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_params(key, config: EnsembleConfig, obs_dim: int, act_dim: int):
    dummy = jnp.zeros((1, obs_dim + act_dim), jnp.float32)
    keys = jax.random.split(key, config.num_members)
    return jax.vmap(_network(config, obs_dim).init, in_axes=(0, None))(keys, dummy)


def init_ensemble(key, obs_dim: int, act_dim: int,
                  config: EnsembleConfig = EnsembleConfig()) -> EnsembleState:
    """An untrained ensemble: identity input standardisation, elites = the first members."""
    output_dim = obs_dim + 1
    nan_members = jnp.full((config.num_members,), jnp.nan, jnp.float32)
    return EnsembleState(
        params=_init_params(key, config, obs_dim, act_dim),
        input_mean=jnp.zeros((obs_dim + act_dim,), jnp.float32),
        input_std=jnp.ones((obs_dim + act_dim,), jnp.float32),
        elite_indices=jnp.arange(config.num_elites, dtype=jnp.int32),
        holdout_indices=jnp.zeros((0,), jnp.int32),
        holdout_mse=nan_members,
        holdout_nll=nan_members,
        holdout_mse_per_dim=jnp.full((config.num_members, output_dim), jnp.nan, jnp.float32),
        mse_history=jnp.full((config.max_epochs, config.num_members), jnp.nan, jnp.float32),
        epochs_trained=jnp.zeros((), jnp.int32),
        config=config, obs_dim=obs_dim, act_dim=act_dim,
    )


def _apply_members(config, obs_dim, params, x, per_member_inputs: bool):
    """x standardised: (..., in) shared by all members, or (M, ..., in) one slice per member."""
    apply = _network(config, obs_dim).apply
    return jax.vmap(apply, in_axes=(0, 0 if per_member_inputs else None))(params, x)


@jax.jit
def predict(model_state: EnsembleState, obs, act):
    """Every member's prediction for the same inputs.

    obs (..., obs_dim), act (..., act_dim) -> mean, logvar, each (M, ..., obs_dim + 1):
    ``[next_obs - obs, reward]``.
    """
    x = jnp.concatenate([obs, act], axis=-1)
    x = (x - model_state.input_mean) / model_state.input_std
    return _apply_members(model_state.config, model_state.obs_dim, model_state.params, x, False)


def uncertainty_penalties(mean, logvar) -> dict[str, jax.Array]:
    """Uncertainty of members' predictions for the SAME inputs (``docs/algorithms.md#pitfall-3``).

    mean, logvar: (M, ..., D) over all members and all output dims (delta obs and reward).
    Returns (...)-shaped arrays:
      aleatoric: MOPO's max over members of ||sigma||_2;
      pairwise_max: max over member pairs of ||mean_i - mean_j||_2 over all output dims;
      pairwise_max_state: the same over the next-state dims only (the reward, the last output
        dim, left out): official MOReL's disagreement;
      ensemble_std: sqrt(mean over dims of the variance over members of the means).
    """
    sigma_norm = jnp.linalg.norm(jnp.exp(0.5 * logvar), axis=-1)
    pair_diff = mean[:, None] - mean[None, :]
    pair_dist = jnp.sqrt(jnp.sum(jnp.square(pair_diff), axis=-1))
    return {
        "aleatoric": jnp.max(sigma_norm, axis=0),
        "pairwise_max": jnp.max(pair_dist, axis=(0, 1)),
        "pairwise_max_state": jnp.max(jnp.sqrt(jnp.sum(jnp.square(pair_diff[..., :-1]),
                                                       axis=-1)), axis=(0, 1)),
        # Variance is shift-invariant; centring on member 0 makes agreement give exactly 0.
        "ensemble_std": jnp.sqrt(jnp.mean(jnp.var(mean - mean[:1], axis=0), axis=-1)),
    }


PENALTY_NAMES = ("aleatoric", "pairwise_max", "pairwise_max_state", "ensemble_std")


@functools.partial(jax.jit, static_argnames="deterministic")
def sample_step(model_state: EnsembleState, key, obs, act, deterministic: bool = False):
    """One model step; each transition uses one uniformly drawn elite.

    obs (..., obs_dim), act (..., act_dim) -> next_obs (..., obs_dim), reward (...), info with
    ``member`` (...) int32 (the elite used) and the :func:`uncertainty_penalties` (...).
    ``deterministic`` uses the chosen elite's mean instead of a sample.
    """
    mean, logvar = predict(model_state, obs, act)
    member_key, noise_key = jax.random.split(key)
    batch_shape = obs.shape[:-1]
    choice = jax.random.randint(member_key, batch_shape, 0, model_state.elite_indices.shape[0])
    member = model_state.elite_indices[choice]
    take = member[None, ..., None]
    chosen_mean = jnp.take_along_axis(mean, take, axis=0)[0]
    if deterministic:
        delta = chosen_mean
    else:
        chosen_std = jnp.exp(0.5 * jnp.take_along_axis(logvar, take, axis=0)[0])
        delta = chosen_mean + chosen_std * jax.random.normal(noise_key, chosen_mean.shape)
    obs_dim = model_state.obs_dim
    next_obs = obs + delta[..., :obs_dim]
    reward = delta[..., obs_dim]
    info = {"member": member, **uncertainty_penalties(mean, logvar)}
    return next_obs, reward, info


@functools.partial(jax.jit, static_argnames="num_samples")
def sample_members(model_state: EnsembleState, key, obs, act, num_samples: int):
    """``num_samples`` draws from EVERY member's Gaussian for the same (obs, act): what each
    member thinks can follow (MOBILE's per-member Bellman targets).

    obs (..., obs_dim), act (..., act_dim) -> next_obs (num_samples, M, ..., obs_dim), reward
    (num_samples, M, ...). Pass ``parts.rollouts.elites_only(model_state)`` to draw from the
    elites only.
    """
    mean, logvar = predict(model_state, obs, act)
    shape = (num_samples,) + mean.shape
    # Drawn flat, then shaped: XLA on a CPU takes seconds to compile the same draw made in a
    # many-dimensional shape (5 s against 0.3 s for 10 x 4 x 122 x 12 normals, jax 0.10).
    noise = jax.random.normal(key, (math.prod(shape),)).reshape(shape)
    delta = mean + jnp.exp(0.5 * logvar) * noise
    obs_dim = model_state.obs_dim
    return obs + delta[..., :obs_dim], delta[..., obs_dim]


def _weight_decay(config: EnsembleConfig, member_params) -> jax.Array:
    layers = [f"hidden_{i}" for i in range(len(config.hidden_sizes))] + ["output"]
    p = member_params["params"]
    return sum(0.5 * decay * jnp.sum(jnp.square(p[name]["kernel"]))
               for name, decay in zip(layers, config.weight_decays, strict=True))


def _member_training_loss(config: EnsembleConfig, net, member_params, x, y) -> jax.Array:
    """One member's training loss on standardised inputs ``x`` and targets ``y``: the Gaussian
    NLL (up to constants), the log-variance-bound term and the weight decay."""
    mean, logvar = net.apply(member_params, x)
    fit = jnp.mean(jnp.square(mean - y) * jnp.exp(-logvar)) + jnp.mean(logvar)
    p = member_params["params"]
    bounds = config.logvar_bound_coef * (jnp.sum(p["max_logvar"]) - jnp.sum(p["min_logvar"]))
    return fit + bounds + _weight_decay(config, member_params)


def training_loss(model_state: EnsembleState, obs, act, rew, next_obs) -> jax.Array:
    """The ensemble's own training loss on a batch, summed over members, ``()``: each member's
    Gaussian NLL plus its log-variance-bound term and weight decay (what :func:`train_ensemble`
    minimises; RAMBO's adversary keeps it as its supervised term). Inputs are standardised with
    the model's statistics; differentiable in ``model_state.params``."""
    config = model_state.config
    x = (jnp.concatenate([obs, act], axis=-1) - model_state.input_mean) / model_state.input_std
    y = jnp.concatenate([next_obs - obs, rew[..., None]], axis=-1)
    net = _network(config, model_state.obs_dim)
    per_member = jax.vmap(lambda p: _member_training_loss(config, net, p, x, y))(
        model_state.params)
    return jnp.sum(per_member)


def _holdout_metrics(mean, logvar, targets):
    """mean, logvar (M, n, D), targets (n, D) -> mse (M,), nll (M,), mse per dim (M, D)."""
    sq = jnp.square(mean - targets)
    mse_per_dim = jnp.mean(sq, axis=1)
    # Not networks.gaussian_log_density: that adds in another order, which moves the stored
    # holdout_nll in the last bits.
    nll = 0.5 * jnp.mean(math.log(2 * math.pi) + logvar + sq * jnp.exp(-logvar), axis=(1, 2))
    return jnp.mean(mse_per_dim, axis=-1), nll, mse_per_dim


def _check_data(obs, act, rew, next_obs):
    obs, act, next_obs = (jnp.asarray(a, jnp.float32) for a in (obs, act, next_obs))
    rew = jnp.asarray(rew, jnp.float32)
    n = obs.shape[0]
    if rew.shape == (n, 1):
        rew = rew.reshape(n)
    shapes = {"observations": obs.shape, "actions": act.shape, "rewards": rew.shape,
              "next_observations": next_obs.shape}
    if (obs.ndim != 2 or act.ndim != 2 or act.shape[0] != n or rew.shape != (n,)
            or next_obs.shape != obs.shape):
        raise ValueError(
            "train_ensemble expects observations (N, obs_dim), actions (N, act_dim), rewards (N,)"
            f" or (N, 1) and next_observations like observations; found {shapes}")
    if n < 2:
        raise ValueError(f"train_ensemble needs at least 2 transitions, found {n}")
    return obs, act, rew, next_obs


def holdout_size(num_transitions: int, config: EnsembleConfig) -> int:
    """min(holdout_fraction * N, max_holdout), at least 1, leaving at least 1 to train on."""
    size = min(int(config.holdout_fraction * num_transitions), config.max_holdout)
    return min(max(size, 1), num_transitions - 1)


def train_ensemble(key, obs, act, rew, next_obs,
                   config: EnsembleConfig = EnsembleConfig()) -> EnsembleState:
    """Train an ensemble on (N,)-row arrays; one compiled program, no Python loop per step.

    obs (N, obs_dim), act (N, act_dim), rew (N,) or (N, 1), next_obs (N, obs_dim).
    Vmappable over ``key`` with the data shared (``in_axes=(0, None, None, None, None, None)``);
    :func:`train_ensembles` does that.
    """
    obs, act, rew, next_obs = _check_data(obs, act, rew, next_obs)
    return _train_jit(key, obs, act, rew, next_obs, config)


def train_ensembles(keys, obs, act, rew, next_obs,
                    config: EnsembleConfig = EnsembleConfig()) -> EnsembleState:
    """One ensemble per key (seeds,) in one program; every state leaf gets a leading seeds axis.

    The data is shared (not copied per seed). The batched epoch loop runs until the last seed
    stops; a seed that has stopped is frozen (its extra epochs are computed and discarded), so
    each seed's result equals its own :func:`train_ensemble` run up to float rounding.
    """
    return jax.vmap(train_ensemble, in_axes=(0, None, None, None, None, None))(
        keys, obs, act, rew, next_obs, config)


@jax.jit
def _train_jit(key, obs, act, rew, next_obs, config: EnsembleConfig) -> EnsembleState:
    n, obs_dim = obs.shape
    act_dim = act.shape[1]
    num_members = config.num_members
    n_holdout = holdout_size(n, config)
    n_train = n - n_holdout
    batch_size = min(config.batch_size, n_train)
    num_batches = n_train // batch_size

    inputs = jnp.concatenate([obs, act], axis=-1)
    targets = jnp.concatenate([next_obs - obs, rew[:, None]], axis=-1)

    split_key, init_key, boot_key, loop_key = jax.random.split(key, 4)
    perm = jax.random.permutation(split_key, n)
    holdout_idx, train_idx = perm[:n_holdout], perm[n_holdout:]

    # Train-split statistics through a weight vector: under a seeds vmap only the (N,) weights
    # are per seed, the (N, in) data stays shared. Centering first keeps E[x^2] - E[x]^2 stable.
    center = jnp.mean(inputs, axis=0)
    centred = inputs - center
    weights = jnp.ones((n,), jnp.float32).at[holdout_idx].set(0.0) / n_train
    first = weights @ centred
    second = weights @ jnp.square(centred)
    input_mean = center + first
    input_std = jnp.sqrt(jnp.maximum(second - jnp.square(first), 0.0))
    input_std = jnp.where(input_std < 1e-12, 1.0, input_std)

    def standardise(x):
        return (x - input_mean) / input_std

    holdout_x = standardise(inputs[holdout_idx])
    holdout_y = targets[holdout_idx]

    if config.bootstrap:
        draws = jax.random.randint(boot_key, (num_members, n_train), 0, n_train)
        member_rows = train_idx[draws]
    else:
        member_rows = jnp.broadcast_to(train_idx, (num_members, n_train))

    params = _init_params(init_key, config, obs_dim, act_dim)
    optimizer = optax.adam(config.learning_rate)
    opt_state = optimizer.init(params)
    net = _network(config, obs_dim)

    def member_loss(member_params, x, y):
        return _member_training_loss(config, net, member_params, x, y)

    def total_loss(all_params, x, y):
        # Members are independent: the sum's gradient is each member's own gradient.
        return jnp.sum(jax.vmap(member_loss)(all_params, x, y))

    def train_step(carry, rows):
        all_params, opt_state = carry
        grads = jax.grad(total_loss)(all_params, standardise(inputs[rows]), targets[rows])
        updates, opt_state = optimizer.update(grads, opt_state, all_params)
        return (optax.apply_updates(all_params, updates), opt_state), None

    def holdout_mse(all_params):
        mean, _ = _apply_members(config, obs_dim, all_params, holdout_x, False)
        return jnp.mean(jnp.square(mean - holdout_y), axis=(1, 2))

    def run_epoch(carry):
        epoch, stale, all_params, opt_state, best_params, best_mse, history, key = carry
        key, shuffle_key = jax.random.split(key)
        shuffled = jax.vmap(jax.random.permutation)(
            jax.random.split(shuffle_key, num_members), member_rows)
        batches = shuffled[:, : num_batches * batch_size].reshape(
            num_members, num_batches, batch_size).swapaxes(0, 1)
        (all_params, opt_state), _ = jax.lax.scan(train_step, (all_params, opt_state), batches)
        mse = holdout_mse(all_params)
        improved = mse < best_mse * (1.0 - config.improvement_threshold)
        best_mse = jnp.where(improved, mse, best_mse)
        best_params = jax.tree_util.tree_map(
            lambda best, new: jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, best),
            best_params, all_params)
        stale = jnp.where(jnp.any(improved), 0, stale + 1)
        history = history.at[epoch].set(mse)
        return epoch + 1, stale, all_params, opt_state, best_params, best_mse, history, key

    def keep_training(carry):
        epoch, stale = carry[0], carry[1]
        return (epoch < config.max_epochs) & (stale < config.patience)

    carry = (
        jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), params, opt_state, params,
        jnp.full((num_members,), jnp.inf, jnp.float32),
        jnp.full((config.max_epochs, num_members), jnp.nan, jnp.float32), loop_key,
    )
    epochs, _, _, _, best_params, _, history, _ = jax.lax.while_loop(
        keep_training, run_epoch, carry)

    mean, logvar = _apply_members(config, obs_dim, best_params, holdout_x, False)
    mse, nll, mse_per_dim = _holdout_metrics(mean, logvar, holdout_y)
    return EnsembleState(
        params=best_params,
        input_mean=input_mean,
        input_std=input_std,
        elite_indices=jnp.argsort(mse)[: config.num_elites].astype(jnp.int32),
        holdout_indices=holdout_idx.astype(jnp.int32),
        holdout_mse=mse,
        holdout_nll=nll,
        holdout_mse_per_dim=mse_per_dim,
        mse_history=history,
        epochs_trained=epochs,
        config=config, obs_dim=obs_dim, act_dim=act_dim,
    )


def evaluate(model_state: EnsembleState, obs, act, rew, next_obs) -> dict[str, jax.Array]:
    """Per-member MSE (M,), Gaussian NLL per dim (M,) and MSE per output dim (M, D) on data."""
    obs, act, rew, next_obs = _check_data(obs, act, rew, next_obs)
    return _evaluate_jit(model_state, obs, act, rew, next_obs)


@jax.jit
def _evaluate_jit(model_state, obs, act, rew, next_obs):
    mean, logvar = predict(model_state, obs, act)
    targets = jnp.concatenate([next_obs - obs, rew[:, None]], axis=-1)
    mse, nll, mse_per_dim = _holdout_metrics(mean, logvar, targets)
    return {"mse": mse, "nll": nll, "mse_per_dim": mse_per_dim}


def select_seed(state: EnsembleState, seed: int) -> EnsembleState:
    """The ensemble of one seed out of a :func:`train_ensembles` result."""
    return jax.tree_util.tree_map(lambda leaf: leaf[seed], state)


def num_parameters(state: EnsembleState) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(state.params)))
