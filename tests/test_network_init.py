"""Network initialisation schemes: the default ("flax") gives the parameters the networks had
before the setting existed, bit for bit, and leaves every config's repr (which checkpoints and
finished cells are matched by) as it was; each scheme's statistics on wide layers; the setting
reaches the networks from each algorithm's config by path; an unknown scheme is a clear error."""

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.algorithms.base import ConfigError
from offrl_jax.algorithms.registry import ALGORITHMS, get_algorithm
from offrl_jax.cli import main
from offrl_jax.networks import (
    EDAC_HIDDEN_BIAS,
    INITS,
    MLP,
    ORTHOGONAL_GAIN,
    DeterministicTanhPolicy,
    GaussianPolicy,
    QEnsemble,
    TanhGaussianPolicy,
)
from offrl_jax.parts import sac
from offrl_jax.tasks import get_env_spec
from offrl_jax.training import runner

HOPPER = get_env_spec("hopper")
KEY = jax.random.PRNGKey(3)
OBS, ACT = jnp.zeros((1, 11)), jnp.zeros((1, 3))


def _previous_networks():
    """The networks as they were written before ``init`` existed (plain ``nn.Dense``), with the
    same class names, so flax derives the same parameter names and random keys."""

    class MLP(nn.Module):
        hidden_dims: Sequence[int]
        output_dim: int
        layer_norm: bool = False

        @nn.compact
        def __call__(self, x):
            for width in self.hidden_dims:
                x = nn.relu(nn.Dense(width)(x))
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
            return nn.Dense(self.output_dim)(x)

    class TanhGaussianPolicy(nn.Module):
        hidden_dims: Sequence[int]
        act_dim: int

        @nn.compact
        def __call__(self, obs):
            return MLP(self.hidden_dims, 2 * self.act_dim)(obs)

    class GaussianPolicy(nn.Module):
        hidden_dims: Sequence[int]
        act_dim: int

        @nn.compact
        def __call__(self, obs):
            self.param("log_std", nn.initializers.zeros, (self.act_dim,))
            return MLP(self.hidden_dims, self.act_dim)(obs)

    class QEnsemble(nn.Module):
        hidden_dims: Sequence[int]
        num_qs: int = 2
        layer_norm: bool = False

        @nn.compact
        def __call__(self, obs, act):
            ensemble = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                               in_axes=None, out_axes=0, axis_size=self.num_qs)
            return ensemble(self.hidden_dims, 1, layer_norm=self.layer_norm)(
                jnp.concatenate([obs, act], axis=-1))

    class DeterministicTanhPolicy(nn.Module):
        hidden_dims: Sequence[int]
        act_dim: int
        layer_norm: bool = False

        @nn.compact
        def __call__(self, obs):
            return MLP(self.hidden_dims, self.act_dim, layer_norm=self.layer_norm)(obs)

    return MLP, TanhGaussianPolicy, GaussianPolicy, QEnsemble, DeterministicTanhPolicy


def test_the_default_scheme_is_the_previous_init_bit_for_bit():
    old_mlp, old_tanh, old_gauss, old_q, old_det = _previous_networks()
    pairs = [
        (MLP((256, 256), 1), old_mlp((256, 256), 1), (OBS,)),
        (MLP((64,), 5, layer_norm=True), old_mlp((64,), 5, layer_norm=True), (OBS,)),
        (TanhGaussianPolicy((256, 256, 256), 3), old_tanh((256, 256, 256), 3), (OBS,)),
        (GaussianPolicy((256, 256), 3), old_gauss((256, 256), 3), (OBS,)),
        (QEnsemble((256, 256, 256), 10), old_q((256, 256, 256), 10), (OBS, ACT)),
        (QEnsemble((256, 256), 2, layer_norm=True), old_q((256, 256), 2, layer_norm=True),
         (OBS, ACT)),
        (DeterministicTanhPolicy((256, 256), 3), old_det((256, 256), 3), (OBS,)),
        (DeterministicTanhPolicy((64, 64), 3, layer_norm=True),
         old_det((64, 64), 3, layer_norm=True), (OBS,)),
    ]
    for new, old, inputs in pairs:
        chex.assert_trees_all_equal(new.init(KEY, *inputs), old.init(KEY, *inputs))


def test_the_default_scheme_leaves_every_config_repr_as_it_was():
    # Checkpoints and finished cells are matched by repr(config): these are the reprs the
    # recorded runs hold.
    assert repr(get_algorithm("sacn").make_config()) == (
        "SACNConfig(agent=Config(hidden_dims=(256, 256, 256), num_qs=10, actor_lr=0.0003, "
        "critic_lr=0.0003, alpha_lr=0.0003, gamma=0.99, tau=0.005, init_alpha=1.0, "
        "target_entropy=None, backup_entropy=True), batch_size=256)")
    assert repr(get_algorithm("td3bc").make_config()) == (
        "TD3BCConfig(td3=Config(hidden_dims=(256, 256), num_qs=2, critic_layer_norm=False, "
        "actor_layer_norm=False, actor_lr=0.0003, critic_lr=0.0003, gamma=0.99, tau=0.005, "
        "policy_noise=0.2, noise_clip=0.5, policy_freq=2), batch_size=256, alpha=2.5, "
        "normalize_states=True)")
    assert repr(get_algorithm("iql").make_config()) == (
        "IQLConfig(hidden_dims=(256, 256), actor_lr=0.0003, critic_lr=0.0003, value_lr=0.0003, "
        "expectile=0.7, temperature=3.0, max_weight=100.0, gamma=0.99, tau=0.005, "
        "batch_size=256, total_updates=1000000, normalize_rewards=True, policy='gaussian')")
    assert repr(get_algorithm("bc").make_config()) == (
        "BCConfig(hidden_dims=(256, 256), learning_rate=0.001, batch_size=256)")
    assert repr(get_algorithm("bc10").make_config()) == (
        "BC10Config(hidden_dims=(256, 256), learning_rate=0.0003, batch_size=256, "
        "top_fraction=0.1, discount=1.0, normalize_states=True)")
    for name, registration in ALGORITHMS.items():
        for task in [None, *registration.task_settings]:
            assert "init=" not in repr(registration.make_config(task)), (name, task)
    chosen = get_algorithm("sacn").make_config(overrides={"agent.init": "edac"})
    assert "init='edac'" in repr(chosen) and chosen != get_algorithm("sacn").make_config()


def _dense_layers(params):
    """``[(kernel, bias), ...]`` of an MLP's Dense layers in order (hidden ones, then output)."""
    layers = params["params"]
    names = sorted((n for n in layers if n.startswith("Dense_")), key=lambda n: int(n[6:]))
    return [(np.asarray(layers[n]["kernel"]), np.asarray(layers[n]["bias"])) for n in names]


WIDE_IN = 400  # fan-in of the first layer; the hidden layer is 512 wide


def test_pytorch_scheme_is_fan_in_uniform_for_kernels_and_biases():
    params = MLP((512,), 256, init_scheme="pytorch").init(KEY, jnp.zeros((1, WIDE_IN)))
    for (kernel, bias), fan_in in zip(_dense_layers(params), (WIDE_IN, 512), strict=True):
        bound = 1.0 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
        assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.9 * bound
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.02)
        assert abs(kernel.mean()) < 0.01 * bound


def test_edac_scheme_hidden_biases_0_1_and_small_uniform_outputs():
    params = MLP((512, 512), 256, init_scheme="edac").init(KEY, jnp.zeros((1, WIDE_IN)))
    layers = _dense_layers(params)
    for (kernel, bias), fan_in in zip(layers[:-1], (WIDE_IN, 512), strict=True):
        bound = 1.0 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.02)
        assert np.all(bias == np.float32(EDAC_HIDDEN_BIAS))
    kernel, bias = layers[-1]  # a value's output layer (official EDAC's critics: 3e-3)
    for array in (kernel, bias):
        assert np.abs(array).max() <= 3e-3 and np.abs(array).max() > 2.9e-3
    # A policy's output layer (official EDAC's mean and log-std heads: 1e-3).
    policy = TanhGaussianPolicy((512,), 128, init_scheme="edac").init(KEY, jnp.zeros((1, WIDE_IN)))
    (_, hidden_bias), (kernel, bias) = _dense_layers({"params": policy["params"]["MLP_0"]})
    assert np.all(hidden_bias == np.float32(EDAC_HIDDEN_BIAS))
    for array in (kernel, bias):
        assert np.abs(array).max() <= 1e-3 and np.abs(array).max() > 0.95e-3


def test_orthogonal_scheme_kernels_are_orthogonal_with_gain_sqrt_2_and_biases_zero():
    params = MLP((512, 256), 1, init_scheme="orthogonal").init(KEY, jnp.zeros((1, WIDE_IN)))
    gain2 = ORTHOGONAL_GAIN ** 2
    for kernel, bias in _dense_layers(params):
        fan_in, fan_out = kernel.shape
        # Orthogonal columns when the kernel is tall, orthogonal rows when it is wide.
        gram = kernel.T @ kernel if fan_in >= fan_out else kernel @ kernel.T
        np.testing.assert_allclose(gram, gain2 * np.eye(min(fan_in, fan_out)), atol=1e-4)
        assert np.all(bias == 0.0)


def test_every_scheme_initialises_every_network():
    for init in INITS:
        for network, inputs in [
            (TanhGaussianPolicy((32, 32), 3, init_scheme=init), (OBS,)),
            (GaussianPolicy((32, 32), 3, init_scheme=init), (OBS,)),
            (QEnsemble((32, 32), 4, layer_norm=True, init_scheme=init), (OBS, ACT)),
            (DeterministicTanhPolicy((32,), 3, layer_norm=True, init_scheme=init), (OBS,)),
        ]:
            params = network.init(KEY, *inputs)
            assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(params))
            outputs = network.apply(params, *inputs)
            assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(outputs))
        log_std = GaussianPolicy((32,), 3, init_scheme=init).init(KEY, OBS)["params"]["log_std"]
        assert np.all(log_std == 0.0)  # official IQL's state-independent log-std


def _hidden_biases(params):
    """Every hidden layer's bias in a network's parameters (the output layer's left out)."""
    out = []

    def visit(tree):
        dense = sorted((n for n in tree if n.startswith("Dense_")), key=lambda n: int(n[6:]))
        out.extend(np.asarray(tree[n]["bias"]) for n in dense[:-1])
        for name, sub in tree.items():
            if not name.startswith("Dense_") and isinstance(sub, dict):
                visit(sub)

    visit(params["params"])
    return out


def _hidden_biases_equal(params, value) -> bool:
    biases = _hidden_biases(params)
    return bool(biases) and all(np.all(b == np.float32(value)) for b in biases)


def test_the_setting_reaches_the_networks_by_each_algorithms_path():
    small = {"agent.hidden_dims": (32, 32)}
    state = get_algorithm("sacn").make(
        get_algorithm("sacn").make_config(
            overrides={**small, "agent.num_qs": 3, "agent.init": "edac"}), HOPPER).init(KEY)
    critic_biases = _hidden_biases(state.agent.critic_params)
    assert len(critic_biases) == 2 and all(b.shape == (3, 32) for b in critic_biases)
    assert _hidden_biases_equal(state.agent.critic_params, 0.1)
    assert _hidden_biases_equal(state.agent.actor_params, 0.1)
    default = get_algorithm("sacn").make(
        get_algorithm("sacn").make_config(overrides=small), HOPPER).init(KEY)
    assert _hidden_biases_equal(default.agent.critic_params, 0.0)

    edac = get_algorithm("edac").make(get_algorithm("edac").make_config(
        overrides={**small, "agent.init": "edac"}), HOPPER).init(KEY)
    assert _hidden_biases_equal(edac.agent.critic_params, 0.1)

    rebrac = get_algorithm("rebrac").make(get_algorithm("rebrac").make_config(
        overrides={"td3.hidden_dims": (32, 32), "td3.init": "edac"}), HOPPER).init(KEY)
    assert _hidden_biases_equal(rebrac.agent.critic_params, 0.1)
    assert _hidden_biases_equal(rebrac.agent.actor_params, 0.1)

    td3bc = get_algorithm("td3bc").make(get_algorithm("td3bc").make_config(
        overrides={"td3.hidden_dims": (32, 32), "td3.init": "pytorch"}), HOPPER)
    params = td3bc.agent.actor.init(KEY, OBS)
    biases = _hidden_biases(params)
    assert biases and all(np.abs(b).max() <= 1.0 / np.sqrt(HOPPER.obs_dim) for b in biases[:1])
    assert all(np.any(b != 0.0) for b in biases)

    iql = get_algorithm("iql")
    iql_state = iql.make(iql.make_config(overrides={"hidden_dims": (32, 32),
                                                    "init": "orthogonal"}), HOPPER).init(KEY)
    kernel = np.asarray(iql_state.value_params["params"]["Dense_1"]["kernel"])
    np.testing.assert_allclose(kernel.T @ kernel, ORTHOGONAL_GAIN ** 2 * np.eye(32), atol=1e-4)

    for name in ("bc", "bc10"):
        algorithm = get_algorithm(name).make(get_algorithm(name).make_config(
            overrides={"hidden_dims": (32, 32), "init": "edac"}), HOPPER)
        params = algorithm.cloner.policy.init(KEY, OBS) if name == "bc" else \
            algorithm.policy.init(KEY, OBS)
        assert _hidden_biases_equal(params, 0.1), name


def test_an_unknown_scheme_is_an_error_naming_the_valid_ones(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="init must be one of 'flax', 'pytorch', 'edac', "
                                         "'orthogonal', found 'xavier'"):
        sac.Config(init="xavier")
    with pytest.raises(ConfigError, match=r"sacn\.agent\.init='xavier': init must be one of "):
        get_algorithm("sacn").make_config(overrides={"agent.init": "xavier"})
    with pytest.raises(ValueError, match="init must be one of"):
        MLP((8,), 1, init_scheme="xavier").init(KEY, OBS)
    called = []
    monkeypatch.setattr(runner, "ensure_dataset", lambda *a, **k: called.append(a))
    with pytest.raises(SystemExit) as error:
        main(["bench", "--profile", "tiny", "--out", str(tmp_path / "run"), "--algos", "sacn",
              "--set", "sacn.agent.init=xavier"])
    text = str(error.value)
    assert text.startswith("offrl bench: ") and "'flax', 'pytorch', 'edac', 'orthogonal'" in text
    assert called == [] and not (tmp_path / "run").exists()
