"""Model rollouts: a policy acting in the dynamics ensemble for a fixed horizon, in ``lax.scan``.

Every rollout runs all ``horizon`` steps (static shapes); a ``valid`` mask says which steps
happened. A rollout whose termination function fires at step k has exactly k valid transitions,
the k-th marked terminal, and nothing valid after it (``docs/algorithms.md#pitfall-4``). A
non-finite step ends its rollout and is itself invalid (not stored).
The uncertainty penalties come from all members' predictions for the same (s, a), computed in
the same pass as the sampled step.

``rollout`` is a pure function, not jitted itself: call it inside your jitted update, with a
``policy_fn`` that closes over the (traced) policy parameters, so a new policy does not
recompile it. Run it from an outer loop, not under a ``lax.cond`` inside a vmapped scan
(``docs/algorithms.md#pitfall-1``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from offrl_jax.models.buffer import Transitions
from offrl_jax.models.ensemble import PENALTY_NAMES, EnsembleState, sample_step

PolicyFn = Callable[[jax.Array, jax.Array], jax.Array]


@struct.dataclass
class Rollout:
    """transitions: leaves (horizon, starts, ...); valid: (horizon, starts) bool;
    uncertainties: {name: (horizon, starts)} for every name in ``PENALTY_NAMES``."""

    transitions: Transitions
    valid: jax.Array
    uncertainties: dict[str, jax.Array]

    @property
    def num_valid(self) -> jax.Array:
        return jnp.sum(self.valid)


def rollout(model_state: EnsembleState, key, start_obs, policy_fn: PolicyFn,
            termination_fn: Callable[[jax.Array], jax.Array], horizon: int,
            penalty: str | None = None, deterministic: bool = False) -> Rollout:
    """Roll ``policy_fn(key, obs) -> action`` out from start_obs (starts, obs_dim).

    ``termination_fn(next_obs (..., obs_dim)) -> (...) bool`` ends a rollout (the task's
    ``ENV_SPECS[env].termination_fn``). ``penalty`` names the uncertainty stored in
    ``transitions.penalties`` (None leaves it None, to match a buffer without penalties).
    """
    if penalty is not None and penalty not in PENALTY_NAMES:
        raise ValueError(f"penalty must be None or one of {PENALTY_NAMES}, found {penalty!r}")
    if horizon < 1:
        raise ValueError(f"rollout horizon must be >= 1, found {horizon}")
    start_obs = jnp.asarray(start_obs, jnp.float32)

    def step(carry, step_key):
        obs, alive = carry
        policy_key, model_key = jax.random.split(step_key)
        action = policy_fn(policy_key, obs)
        next_obs, reward, info = sample_step(model_state, model_key, obs, action, deterministic)
        uncertainties = {name: info[name] for name in PENALTY_NAMES}
        # A non-finite prediction (a diverged model or policy) is no transition: it ends the
        # rollout and is not kept. Stored as a terminal it would still poison the TD target,
        # r + gamma (1 - 1) * NaN = NaN.
        finite = (jnp.all(jnp.isfinite(next_obs), axis=-1) & jnp.isfinite(reward)
                  & jnp.all(jnp.isfinite(action), axis=-1))
        if penalty is not None:
            finite = finite & jnp.isfinite(uncertainties[penalty])
        done = jnp.asarray(termination_fn(next_obs), bool) | ~finite
        terminal = alive & done & finite
        transitions = Transitions(
            observations=obs, actions=action, rewards=reward, next_observations=next_obs,
            terminals=terminal.astype(jnp.float32),
            penalties=None if penalty is None else uncertainties[penalty],
        )
        still_alive = alive & ~done
        # Ended rollouts keep their last state (finite) and emit only invalid rows from now on.
        obs = jnp.where(still_alive[:, None], next_obs, obs)
        return (obs, still_alive), (transitions, alive & finite, uncertainties)

    alive = jnp.ones(start_obs.shape[:1], bool)
    keys = jax.random.split(key, horizon)
    _, (transitions, valid, uncertainties) = jax.lax.scan(step, (start_obs, alive), keys)
    return Rollout(transitions, valid, uncertainties)
