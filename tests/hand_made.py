"""A dynamics ensemble with hand-set weights, whose predictions are known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax.models import EnsembleConfig, init_ensemble


def hand_made_ensemble(obs_dim, act_dim, bias, gain, elites):
    """An ensemble whose member i predicts ``[s' - s, r] = bias[i] + gain[i] * swish(s[0])``
    (one hidden unit reading the first observation dim; identity input scaling) with a
    negligible variance (std about 1e-13). ``bias``, ``gain``: (members, obs_dim + 1)."""
    members = len(bias)
    ensemble = init_ensemble(jax.random.PRNGKey(0), obs_dim, act_dim, EnsembleConfig(
        num_members=members, num_elites=len(elites), hidden_sizes=(1,),
        weight_decays=(0.0, 0.0)))
    out = obs_dim + 1
    hidden_kernel = np.zeros((members, obs_dim + act_dim, 1), np.float32)
    hidden_kernel[:, 0, 0] = 1.0
    output_kernel = np.zeros((members, 1, 2 * out), np.float32)
    output_kernel[:, 0, :out] = gain
    output_bias = np.full((members, 2 * out), -100.0, np.float32)  # raw log-variance
    output_bias[:, :out] = bias
    params = {"params": {
        "hidden_0": {"kernel": hidden_kernel, "bias": np.zeros((members, 1), np.float32)},
        "output": {"kernel": output_kernel, "bias": output_bias},
        "max_logvar": np.full((members, out), 0.5, np.float32),
        "min_logvar": np.full((members, out), -60.0, np.float32)}}
    return ensemble.replace(params=jax.tree_util.tree_map(jnp.asarray, params),
                            elite_indices=jnp.asarray(elites, jnp.int32))


def swish(x):
    return x / (1.0 + np.exp(-x))


def predicted(bias, gain, obs):
    """What member i of :func:`hand_made_ensemble` predicts: next states (M, B, obs) and
    rewards (M, B)."""
    obs_dim = obs.shape[-1]
    out = bias[:, None, :] + gain[:, None, :] * swish(obs[:, 0])[None, :, None]
    return obs[None] + out[..., :obs_dim], out[..., obs_dim]
