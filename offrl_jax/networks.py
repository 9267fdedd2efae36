"""Networks shared by the algorithms: MLPs, tanh-Gaussian and Gaussian policies, a Q ensemble.

Shapes: observations ``(..., obs_dim)``, actions ``(..., act_dim)``; a Q ensemble of ``num_qs``
members returns ``(num_qs, ...)``.

Every network takes ``init_scheme``, the scheme its Dense layers are initialised by (:data:`INITS`,
:func:`dense_inits`); the schemes of the reference codes and which algorithm reads which:
``docs/algorithms.md#network-initialisation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

# The initialisation schemes of Dense layers, by name (:func:`dense_inits`):
# - "flax": flax's defaults, LeCun-normal kernels and zero biases;
# - "pytorch": PyTorch's nn.Linear, kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in));
# - "edac": hidden kernels U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and biases 0.1, output kernel and
#   bias U(-b, b) with b = 3e-3 for a value (Q or V) and 1e-3 for a policy's outputs (official
#   EDAC's and SAC-N's rlkit networks, CORL's SAC-N, EDAC and ReBRAC);
# - "orthogonal": every kernel orthogonal with gain sqrt(2), zero biases (official IQL).
INITS = ("flax", "pytorch", "edac", "orthogonal")
# The "edac" scheme's output bound by what the output layer gives (``output`` of an MLP).
EDAC_OUTPUT_BOUNDS = {"value": 3e-3, "policy": 1e-3}
EDAC_HIDDEN_BIAS = 0.1
ORTHOGONAL_GAIN = math.sqrt(2.0)


def check_init(init: str) -> None:
    """A ``ValueError`` naming the valid schemes when ``init`` is not one of :data:`INITS`."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(repr(i) for i in INITS)}, found "
                         f"{init!r}")


def _uniform(bound: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense_inits(init: str, fan_in: int, output: str | None = None) -> dict[str, Callable]:
    """``{"kernel_init": ..., "bias_init": ...}`` of one Dense layer with ``fan_in`` inputs under
    the scheme ``init``: a hidden layer when ``output`` is None, else an output layer giving a
    ``"value"`` or a ``"policy"``'s parameters (mean, log-std or action)."""
    check_init(init)
    if output is not None and output not in EDAC_OUTPUT_BOUNDS:
        raise ValueError(f"output must be None or one of {', '.join(EDAC_OUTPUT_BOUNDS)}, "
                         f"found {output!r}")
    if init == "flax":  # nn.Dense's own defaults
        return {"kernel_init": nn.initializers.lecun_normal(),
                "bias_init": nn.initializers.zeros_init()}
    if init == "orthogonal":
        return {"kernel_init": nn.initializers.orthogonal(ORTHOGONAL_GAIN),
                "bias_init": nn.initializers.zeros_init()}
    fan_in_bound = 1.0 / math.sqrt(fan_in)
    if init == "pytorch":
        return {"kernel_init": _uniform(fan_in_bound), "bias_init": _uniform(fan_in_bound)}
    if output is None:  # "edac"
        return {"kernel_init": _uniform(fan_in_bound),
                "bias_init": nn.initializers.constant(EDAC_HIDDEN_BIAS)}
    bound = EDAC_OUTPUT_BOUNDS[output]
    return {"kernel_init": _uniform(bound), "bias_init": _uniform(bound)}


class MLP(nn.Module):
    """Dense -> activation per hidden layer (then LayerNorm, with ``layer_norm``: ReBRAC's
    critics), and a plain Dense output layer; Dense layers initialised by ``init_scheme``,
    the output layer as one giving ``output`` (``"value"`` or ``"policy"``)."""

    hidden_dims: Sequence[int]
    output_dim: int
    activation: str = "relu"
    layer_norm: bool = False
    init_scheme: str = "flax"
    output: str = "value"

    @nn.compact
    def __call__(self, x):
        act = getattr(nn, self.activation)
        for width in self.hidden_dims:
            x = act(nn.Dense(width, **dense_inits(self.init_scheme, x.shape[-1]))(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return nn.Dense(self.output_dim,
                        **dense_inits(self.init_scheme, x.shape[-1], self.output))(x)


class TanhGaussianPolicy(nn.Module):
    """``obs -> (mean, log_std)`` of a Gaussian whose samples are squashed by tanh."""

    hidden_dims: Sequence[int]
    act_dim: int
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden_dims, 2 * self.act_dim, init_scheme=self.init_scheme,
                  output="policy")(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def gaussian_log_density(squared_error, logvar):
    """Per-dimension log-density of a diagonal Gaussian, ``-0.5 * (z^2 + log sigma^2 + log 2 pi)``,
    from the squared standardised error ``z^2`` and the log-variance.

    The one place the suite writes it. Each caller standardises as its parameterisation reads
    (the policies' log-std: ``((x - mean) / exp(log_std)) ** 2`` and ``2 * log_std``; the
    dynamics models' log-variance: ``(x - mean) ** 2 * exp(-logvar)`` and ``logvar``), so every
    caller keeps its own operation order and results."""
    return -0.5 * (squared_error + logvar + jnp.log(2 * jnp.pi))


def tanh_gaussian_log_prob(mean, log_std, pre_tanh):
    """Log-density of ``tanh(pre_tanh)`` under the squashed Gaussian, summed over action dims."""
    gaussian = gaussian_log_density(((pre_tanh - mean) / jnp.exp(log_std)) ** 2, 2 * log_std)
    # log(1 - tanh(x)^2) written stably as 2 * (log 2 - x - softplus(-2x)).
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, axis=-1)


def sample_tanh_gaussian(mean, log_std, key):
    """A reparameterised sample ``action`` in (-1, 1) and its log-probability."""
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)


def tanh_gaussian_log_prob_of_action(mean, log_std, action, eps=1e-6):
    """Log-probability of a given squashed ``action`` (e.g. a dataset action, for BC)."""
    action = jnp.clip(action, -1.0 + eps, 1.0 - eps)
    return tanh_gaussian_log_prob(mean, log_std, jnp.arctanh(action))


class GaussianPolicy(nn.Module):
    """``obs -> (mean, log_std)`` of an unsquashed Gaussian whose mean is bounded by tanh and
    whose log-std is one learned vector, the same for every state (official IQL's policy), zero
    at initialisation whatever ``init_scheme``."""

    hidden_dims: Sequence[int]
    act_dim: int
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, obs):
        mean = jnp.tanh(MLP(self.hidden_dims, self.act_dim, init_scheme=self.init_scheme,
                            output="policy")(obs))
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return mean, jnp.broadcast_to(jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX), mean.shape)


def gaussian_log_prob(mean, log_std, action):
    """Log-density of ``action`` under a diagonal Gaussian, summed over action dims."""
    return jnp.sum(gaussian_log_density(((action - mean) / jnp.exp(log_std)) ** 2,
                                        2 * log_std), axis=-1)


class QEnsemble(nn.Module):
    """``num_qs`` independent Q networks as one vmapped parameter axis: ``(num_qs, ...)``;
    with ``layer_norm`` each member's hidden layers end in a LayerNorm (ReBRAC's critics)."""

    hidden_dims: Sequence[int]
    num_qs: int = 2
    layer_norm: bool = False
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, obs, act):
        ensemble = nn.vmap(
            MLP, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=None, out_axes=0, axis_size=self.num_qs)
        return ensemble(self.hidden_dims, 1, layer_norm=self.layer_norm,
                        init_scheme=self.init_scheme)(
            jnp.concatenate([obs, act], axis=-1))[..., 0]


def squashed_action(mean, log_std, key, deterministic: bool):
    """The policy's action: ``tanh(mean)``, or a sample of the squashed Gaussian."""
    if deterministic:
        return jnp.tanh(mean)
    return sample_tanh_gaussian(mean, log_std, key)[0]


class DeterministicTanhPolicy(nn.Module):
    """``obs -> action`` in (-1, 1): tanh of an MLP's output (TD3's actor); ``layer_norm`` puts
    a LayerNorm after each hidden activation."""

    hidden_dims: Sequence[int]
    act_dim: int
    layer_norm: bool = False
    init_scheme: str = "flax"

    @nn.compact
    def __call__(self, obs):
        return jnp.tanh(MLP(self.hidden_dims, self.act_dim, layer_norm=self.layer_norm,
                            init_scheme=self.init_scheme, output="policy")(obs))
