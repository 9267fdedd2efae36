"""Termination functions of the v4 MuJoCo locomotion tasks, in jnp.

Each takes ``next_obs`` of shape ``(..., obs_dim)`` and returns a bool array of shape
``(...)``: True where the transition into ``next_obs`` ends the episode (a real fall, not a
time limit). They reproduce Gymnasium v4's ``terminated`` from the observation alone, so the
dynamics-model rollouts can end exactly where the real environment would
(``docs/algorithms.md#pitfall-4``; the abs-of-a-boolean mistake of public code avoided,
``docs/algorithms.md#pitfall-5``).

Observations exclude the x (and for ant the y) position, so ``obs[0]`` is the torso height for
hopper, walker2d and ant, and ``obs[1]`` the torso angle for hopper and walker2d.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

TerminationFn = Callable[[jnp.ndarray], jnp.ndarray]


def halfcheetah_done(next_obs: jnp.ndarray) -> jnp.ndarray:
    """HalfCheetah never falls; only a diverged state ends it: non-finite, or any |obs| >= 100
    (the same guard as hopper's and walker2d's; real halfcheetah states stay far inside it,
    a model that leaves it has diverged)."""
    alive = (jnp.all(jnp.isfinite(next_obs), axis=-1)
             & jnp.all(jnp.abs(next_obs) < 100.0, axis=-1))
    return ~alive


def hopper_done(next_obs: jnp.ndarray) -> jnp.ndarray:
    """Alive iff finite, |obs[1:]| < 100, height > 0.7 and |angle| < 0.2."""
    height, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (
        jnp.all(jnp.isfinite(next_obs), axis=-1)
        & jnp.all(jnp.abs(next_obs[..., 1:]) < 100.0, axis=-1)
        & (height > 0.7)
        & (jnp.abs(angle) < 0.2)
    )
    return ~alive


def walker2d_done(next_obs: jnp.ndarray) -> jnp.ndarray:
    """Alive iff finite, |obs| < 100 (a divergence guard), 0.8 < height < 2 and -1 < angle < 1."""
    height, angle = next_obs[..., 0], next_obs[..., 1]
    alive = (
        jnp.all(jnp.isfinite(next_obs), axis=-1)
        & jnp.all(jnp.abs(next_obs) < 100.0, axis=-1)
        & (height > 0.8)
        & (height < 2.0)
        & (angle > -1.0)
        & (angle < 1.0)
    )
    return ~alive


def ant_done(next_obs: jnp.ndarray) -> jnp.ndarray:
    """Alive iff finite and 0.2 <= height <= 1.0."""
    height = next_obs[..., 0]
    alive = jnp.all(jnp.isfinite(next_obs), axis=-1) & (height >= 0.2) & (height <= 1.0)
    return ~alive
