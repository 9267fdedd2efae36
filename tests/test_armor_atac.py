"""ATAC and ARMOR: the adversary reaches the model, relative improvement over pi_ref, BC,
relative pessimism of ATAC's critic, the L2 projection, and ARMOR's model-data bookkeeping."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from offrl_jax.algorithms import armor, atac, bc
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset, sample_batch
from offrl_jax.networks import TanhGaussianPolicy
from offrl_jax.parts import atac as atac_part
from offrl_jax.parts import dynamics, sac
from offrl_jax.policies import PolicyFileError, save_actor
from offrl_jax.tasks import get_env_spec
from offrl_jax.training.loop import make_interval_fn

HOPPER = get_env_spec("hopper")


@dataclasses.dataclass(frozen=True)
class BanditSpec:
    """A one-step task: every transition ends the episode."""

    name: str = "bandit"
    obs_dim: int = 3
    act_dim: int = 1

    @staticmethod
    def termination_fn(next_obs):
        return jnp.ones(next_obs.shape[:-1], bool)


BANDIT = BanditSpec()


@dataclasses.dataclass(frozen=True)
class NeverDoneSpec(BanditSpec):
    """The bandit's sizes, but no transition ends the episode."""

    @staticmethod
    def termination_fn(next_obs):
        return jnp.zeros(next_obs.shape[:-1], bool)


def bandit_reference_action(obs):
    return -0.4 + 0.2 * np.tanh(obs[:, :1])


def bandit_true_reward(obs, actions):
    """``d = a - a_ref(s)``: reward d up to d = 0.3, then a cliff (slope -5). The data only shows
    d within about +-0.15 (3 std), where the reward rises with a: a model fit to it extrapolates
    the rise past the cliff, 6 std out."""
    d = actions - bandit_reference_action(obs)
    return np.sum(np.where(d <= 0.3, d, 0.3 - 5.0 * (d - 0.3)), axis=-1)


def bandit_dataset(num=2000, seed=0) -> Dataset:
    """Actions of a narrow behaviour policy around a good reference (std 0.05), terminals 1."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num, BANDIT.obs_dim)).astype(np.float32)
    actions = np.clip(bandit_reference_action(obs) + 0.05 * rng.normal(size=(num, 1)),
                      -0.99, 0.99).astype(np.float32)
    ones = np.ones(num, np.float32)
    return Dataset.from_arrays(observations=obs, actions=actions,
                               rewards=bandit_true_reward(obs, actions).astype(np.float32),
                               next_observations=obs, terminals=ones, timeouts=0 * ones,
                               episode_ids=np.arange(num))


TEST_OBS = np.random.default_rng(123).normal(size=(2000, BANDIT.obs_dim)).astype(np.float32)


def true_value(act_fn, state) -> float:
    actions = np.asarray(act_fn(state, jnp.asarray(TEST_OBS), jax.random.PRNGKey(0), True))
    return float(bandit_true_reward(TEST_OBS, actions).mean())


# A one-step task: gamma only enters V_max = max|r| / (1 - gamma) of E_D(M), and one-step returns
# are bounded by max|r|, so gamma = 0 gives the right V_max. Rates are raised from the paper's
# (5e-4 / 5e-7) so a few hundred updates move the actor; the actor stays the slower player (with
# a ratio of 3 instead of 30, transients overshoot past the data before the adversary follows).
# E_D(M) and lambda are the defaults (the reward anchored at the pretrained model's own error).
ARMOR_BANDIT = armor.ArmorConfig(
    agent=sac.Config(hidden_dims=(32, 32), actor_lr=1e-4, critic_lr=3e-3, alpha_lr=1e-3,
                     gamma=0.0, tau=5e-3),
    dynamics=dynamics.Config(members=1, elites=1, bootstrap=False, hidden_dims=(32, 32),
                             weight_decays=(1e-5, 1e-5, 1e-5), max_epochs=30),
    batch_size=64, model_batch_size=64, model_lr=3e-3, beta=3.0, warmstart_steps=500,
    warmstart_lr=3e-3, model_buffer_capacity=4096, rollout_horizon=1)
ARMOR = armor.ARMOR(ARMOR_BANDIT, BANDIT)
SEEDS = 2


def seed_slice(tree, i):
    return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)


EXPAND = jax.jit(ARMOR.expand_model_data)


@pytest.fixture(scope="module")
def bandit():
    """The bandit data and ARMOR initialised for two seeds as the Trainer does it."""
    data = bandit_dataset()
    init = jax.jit(jax.vmap(ARMOR.init, in_axes=(0, None)))
    states = init(jax.random.split(jax.random.PRNGKey(0), SEEDS), data)
    return data, states


def test_armor_policy_stays_above_reference_where_unconstrained_learner_falls(bandit):
    data, states = bandit
    reference = [true_value(ARMOR.reference_act, seed_slice(states, i)) for i in range(SEEDS)]
    # pi_ref (BC) is a good policy: the data's actions are near the reward's best covered ones.
    assert min(reference) > -0.05, reference

    # SAC on the pretrained model's data (no pessimism): a model-based learner that trusts the
    # model's extrapolation to unseen actions, with actions from its policy and uniform ones.
    model = seed_slice(states, 0).model
    learner = sac.Agent(sac.Config(hidden_dims=(32, 32), actor_lr=1e-3, critic_lr=3e-3,
                                   alpha_lr=1e-3), BANDIT.obs_dim, BANDIT.act_dim)

    def sac_step(agent, key):
        batch_key, pi_key, uniform_key, update_key = jax.random.split(key, 4)
        real = sample_batch(data, batch_key, 64)
        pi_act, _ = learner.sample(agent.actor_params, real.observations, pi_key)
        obs = jnp.concatenate([real.observations, real.observations])
        actions = jax.lax.stop_gradient(jnp.concatenate(
            [pi_act, jax.random.uniform(uniform_key, pi_act.shape, minval=-1, maxval=1)]))
        next_obs, rewards = armor.model_transition(model, model.params, obs, actions,
                                                   jnp.zeros_like(obs))
        batch = real.replace(observations=obs, actions=actions, rewards=rewards,
                             next_observations=next_obs, terminals=jnp.ones_like(rewards))
        return learner.update(agent, batch, update_key)

    agent, _ = jax.jit(lambda k: jax.lax.scan(
        sac_step, learner.init(k), jax.random.split(k, 1000)))(jax.random.PRNGKey(2))
    unconstrained = true_value(learner.act, agent)
    assert unconstrained < min(reference) - 1.0, (unconstrained, reference)

    # ARMOR with the same model class and data, seeds vmapped as in the Trainer.
    interval = jax.jit(jax.vmap(make_interval_fn(ARMOR, 250),
                                in_axes=(0, 0, None, 0)))
    failed = jnp.zeros(SEEDS, bool)
    initial_model = states.model.params
    history = []
    for i in range(4):
        keys = jax.random.split(jax.random.PRNGKey(10 + i), SEEDS)
        states, failed, metrics = interval(states, failed, data, keys)
        history.append([true_value(ARMOR.act, seed_slice(states, s)) for s in range(SEEDS)])
    assert not np.any(np.asarray(failed))
    for values in history:
        for value, ref in zip(values, reference, strict=True):
            assert value > ref - 0.05, (history, reference, unconstrained)
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                   initial_model, states.model.params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-3  # the adversary trained the model
    assert np.all(np.asarray(metrics["model_buffer_size"]) > 0)


def test_adversary_loss_reaches_the_model_through_bellman_and_fit_terms(bandit):
    data, states = bandit
    real = sample_batch(data, jax.random.PRNGKey(3), ARMOR_BANDIT.batch_size)
    state = EXPAND(seed_slice(states, 0), real.observations, jax.random.PRNGKey(4),
                   jnp.asarray(True))  # D_model must hold pairs to sample from
    batch = jax.jit(ARMOR.adversary_batch)(state, real, jax.random.PRNGKey(5))
    model_tx = optax.adam(1e-3)

    def model_grads(state, beta, fit_weight, algorithm=ARMOR):
        return jax.grad(algorithm.adversary_loss, argnums=2, has_aux=True)(
            state, state.agent.critic_params, state.model.params, batch, jax.random.PRNGKey(4),
            beta, fit_weight)[0]

    @jax.jit
    def model_step(beta, fit_weight):
        grads = model_grads(state, beta, fit_weight)
        updates, _ = model_tx.update(grads, model_tx.init(state.model.params))
        moved = optax.apply_updates(state.model.params, updates)
        change = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), moved,
                                        state.model.params)
        grad_norm = optax.global_norm(grads)
        return grad_norm, jnp.max(jnp.stack(jax.tree_util.tree_leaves(change)))

    bellman_only = model_step(3.0, 0.0)
    both = model_step(3.0, 10.0)
    assert float(bellman_only[0]) > 1e-4 and float(bellman_only[1]) > 1e-4, bellman_only
    assert abs(float(both[0]) - float(bellman_only[0])) > 1e-6, (both, bellman_only)
    # Loss (4): beta multiplies the Bellman error and lambda * E_D(M) together, so with beta = 0
    # the model gets no gradient whatever lambda is (the relative term only reads its states).
    for fit_weight in (0.0, 10.0):
        neither = model_step(0.0, fit_weight)
        assert float(neither[0]) == 0.0 and float(neither[1]) == 0.0, neither

    # The s'_M path: the output columns of the predicted next-state mean get a Bellman gradient
    # once transitions are not terminal and gamma > 0 (in the bandit only r_M carries it).
    def next_state_columns(algorithm):
        grads = jax.jit(model_grads, static_argnums=3)(state, 3.0, 0.0, algorithm)
        kernel = grads["params"]["output"]["kernel"]
        return float(jnp.max(jnp.abs(kernel[..., :BANDIT.obs_dim])))

    continuing = armor.ARMOR(dataclasses.replace(
        ARMOR_BANDIT, agent=dataclasses.replace(ARMOR_BANDIT.agent, gamma=0.99)),
        NeverDoneSpec())
    assert next_state_columns(ARMOR) == 0.0
    assert next_state_columns(continuing) > 1e-6


def test_model_data_expansion_resets_and_advances(bandit):
    data, states = bandit
    state = seed_slice(states, 0)
    expand = jax.jit(armor.ARMOR(ARMOR_BANDIT, NeverDoneSpec()).expand_model_data)
    reset_obs = jnp.asarray(TEST_OBS[:ARMOR_BANDIT.batch_size])
    size = int(state.model_buffer.size)
    rows = 2 * ARMOR_BANDIT.batch_size

    def added(before, after):
        slots = (int(before.model_buffer.insert_position) + np.arange(rows)) % 4096
        return np.asarray(after.model_buffer.data.observations)[slots].reshape(
            2, ARMOR_BANDIT.batch_size, -1), slots

    after_reset = expand(state, reset_obs, jax.random.PRNGKey(0), jnp.asarray(True))
    stored, slots = added(state, after_reset)
    np.testing.assert_array_equal(stored, np.broadcast_to(reset_obs, stored.shape))
    assert int(after_reset.model_buffer.size) == min(size + rows, 4096)
    # Non-terminal transitions: the model states advance to the stored next states.
    next_stored = np.asarray(after_reset.model_buffer.data.next_observations)[slots]
    np.testing.assert_allclose(np.asarray(after_reset.rollout_obs).reshape(rows, -1),
                               next_stored)
    assert not np.allclose(next_stored, np.tile(np.asarray(reset_obs), (2, 1)))
    # Without a reset the rollouts continue from where they are.
    continued = expand(after_reset, reset_obs, jax.random.PRNGKey(1), jnp.asarray(False))
    stored, _ = added(after_reset, continued)
    np.testing.assert_array_equal(stored, np.asarray(after_reset.rollout_obs))
    # Terminal transitions (the bandit's) restart from the real states.
    terminal = EXPAND(seed_slice(states, 0), reset_obs, jax.random.PRNGKey(2),
                      jnp.asarray(False))
    np.testing.assert_array_equal(np.asarray(terminal.rollout_obs),
                                  np.broadcast_to(reset_obs, terminal.rollout_obs.shape))


def behaviour_dataset(num=1000, seed=0):
    """Deterministic narrow behaviour a = 0.8 tanh(W s); reward 1 everywhere; one-step."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num, HOPPER.obs_dim)).astype(np.float32)
    w = np.random.default_rng(7).normal(size=(HOPPER.obs_dim, HOPPER.act_dim)) * 0.4
    actions = (0.8 * np.tanh(obs @ w)).astype(np.float32)
    ones = np.ones(num, np.float32)
    data = Dataset.from_arrays(observations=obs, actions=actions, rewards=ones,
                               next_observations=obs, terminals=ones, timeouts=0 * ones,
                               episode_ids=np.arange(num))
    return data, obs, actions


def test_bc_and_atac_warm_start_recover_behaviour_actions():
    data, obs, actions = behaviour_dataset()
    cloner = bc.BC(bc.BCConfig(hidden_dims=(32, 32), learning_rate=3e-3, batch_size=128),
                   HOPPER)
    state, _ = jax.jit(lambda k: jax.lax.scan(lambda c, key: cloner.update(c, data, key),
                                              cloner.init(k),
                                              jax.random.split(k, 800)))(jax.random.PRNGKey(1))
    predicted = np.asarray(cloner.act(state, jnp.asarray(obs), jax.random.PRNGKey(0)))
    assert np.mean((predicted - actions) ** 2) < 5e-3

    warm = atac.ATAC(atac_config(hidden_dims=(32, 32), batch_size=128, warmstart_steps=800,
                                 warmstart_lr=3e-3), HOPPER)
    state = jax.jit(lambda k: warm.init(k, data))(jax.random.PRNGKey(0))
    predicted = np.asarray(warm.act(state, jnp.asarray(obs), jax.random.PRNGKey(0)))
    assert np.mean((predicted - actions) ** 2) < 5e-3
    # The warm-started critics fit the one-step value (reward 1) on the data.
    q = warm.agent.q(state.agent.critic_params, obs, actions)
    np.testing.assert_allclose(np.asarray(q).mean(), 1.0, atol=0.1)


def atac_config(hidden_dims, critic_lr=5e-4, **fields):
    """ATAC's defaults with a smaller agent (and faster critic rate)."""
    agent = dataclasses.replace(atac.ATACConfig().agent, hidden_dims=hidden_dims,
                                critic_lr=critic_lr)
    return atac.ATACConfig(agent=agent, **fields)


def atac_run(config, data, num):
    """``num`` updates of two seeds, vmapped with the dataset shared as in the Trainer."""
    algorithm = atac.ATAC(config, HOPPER)
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    initial = jax.jit(jax.vmap(lambda k: algorithm.init(k, data)))(keys)
    interval = jax.jit(jax.vmap(make_interval_fn(algorithm, num),
                                in_axes=(0, 0, None, 0)))
    states, failed, metrics = interval(initial, jnp.zeros(SEEDS, bool), data,
                                       jax.random.split(jax.random.PRNGKey(1), SEEDS))
    assert not np.any(np.asarray(failed))
    return algorithm, initial, states, metrics


def test_atac_critic_ranks_dataset_actions_above_unseen_ones():
    # Reward 1 for every action: only relative pessimism can rank the data's actions higher.
    data, obs, actions = behaviour_dataset()
    ood = np.asarray(jax.random.uniform(jax.random.PRNGKey(5), actions.shape, minval=-1,
                                        maxval=1))

    def gaps(beta):
        config = atac_config(hidden_dims=(32, 32), critic_lr=1e-3, batch_size=64, beta=beta,
                             warmstart_steps=0)
        algorithm, _, states, _ = atac_run(config, data, 300)
        out = []
        for i in range(SEEDS):
            agent = seed_slice(states, i).agent
            q = lambda a, agent=agent: algorithm.agent.q(agent.critic_params, obs, a)[0]  # noqa
            out.append(float(jnp.mean(q(actions) - q(ood))))
        return out

    for pessimistic, plain in zip(gaps(0.5), gaps(1e4), strict=True):
        assert pessimistic > 0.3, pessimistic
        assert pessimistic > abs(plain) + 0.2, (pessimistic, plain)


def test_atac_beta_is_chosen_per_dataset():
    # More pessimism (small beta) where the data is near-expert; the rest as documented
    # (docs/algorithms.md#atac); a task without a row keeps the config default.
    beta = {task: get_algorithm("atac").make_config(task).beta for task in (
        "hopper-medium-expert", "walker2d-expert", "halfcheetah-medium",
        "hopper-medium-replay", "walker2d-random")}
    assert beta == {"hopper-medium-expert": 1.0, "walker2d-expert": 1.0,
                    "halfcheetah-medium": 16.0, "hopper-medium-replay": 16.0,
                    "walker2d-random": 16.0}
    assert get_algorithm("atac").make_config("ant-medium").beta == atac.ATACConfig().beta


def test_l2_projection_keeps_every_critic_layer_in_the_ball():
    critic = jax.jit(sac.Agent(sac.Config(hidden_dims=(16, 16)), HOPPER.obs_dim,
                               HOPPER.act_dim).init)(jax.random.PRNGKey(0))
    big = jax.tree_util.tree_map(lambda x: 50.0 * x, critic.critic_params)
    projected = atac_part.project_l2(big, 100.0)
    for before, after in zip(atac_part.kernel_norms(big), atac_part.kernel_norms(projected),
                             strict=True):
        np.testing.assert_allclose(np.asarray(after), np.minimum(np.asarray(before), 100.0),
                                   rtol=1e-5)
    for path, leaf in jax.tree_util.tree_flatten_with_path(projected)[0]:
        original = big
        for key in path:
            original = original[key.key]
        if path[-1].key == "bias":
            np.testing.assert_array_equal(leaf, original)
        else:  # each member's layer keeps its direction
            axes = (-2, -1)
            cosine = jnp.sum(leaf * original, axes) / jnp.sqrt(
                jnp.sum(leaf ** 2, axes) * jnp.sum(original ** 2, axes))
            np.testing.assert_allclose(np.asarray(cosine), 1.0, atol=1e-5)
    # In training: a radius every layer starts above stays binding after each step.
    data, _, _ = behaviour_dataset()
    config = atac_config(hidden_dims=(16, 16), critic_lr=1e-2, batch_size=64,
                         norm_constraint=0.5, warmstart_steps=0)
    _, initial, states, _ = atac_run(config, data, 50)
    assert min(float(n.min()) for n in atac_part.kernel_norms(initial.agent.critic_params)) > 0.5
    for norms in atac_part.kernel_norms(states.agent.critic_params):  # (seeds, num_qs)
        assert norms.shape == (SEEDS, 2) and float(norms.max()) <= 0.5 + 1e-5
    # The default radius 100 on the default 3x256 critic.
    default = jax.jit(atac.ATAC(atac.ATACConfig(warmstart_steps=0), HOPPER).init)(
        jax.random.PRNGKey(0))
    grown = jax.jit(atac_part.project_l2, static_argnums=1)(
        jax.tree_util.tree_map(lambda x: 30.0 * x, default.agent.critic_params), 100.0)
    assert max(float(n.max()) for n in atac_part.kernel_norms(grown)) <= 100.0 * (1 + 1e-6)



def fit_reference_policy(target_fn, hidden_dims=(32, 32), steps=1500):
    """A tanh-Gaussian actor whose mean action is ``target_fn(obs)`` (least squares on the
    bandit's states), std about 0.05: the reference of the tests below."""
    net = TanhGaussianPolicy(hidden_dims, BANDIT.act_dim)
    obs = jnp.asarray(np.random.default_rng(7).normal(size=(4096, BANDIT.obs_dim)), jnp.float32)
    target = jnp.asarray(target_fn(np.asarray(obs)), jnp.float32)
    params = net.init(jax.random.PRNGKey(3), obs[:1])
    tx = optax.adam(3e-3)

    def loss(p):
        mean, log_std = net.apply(p, obs)
        return jnp.mean((jnp.tanh(mean) - target) ** 2) + jnp.mean((log_std - np.log(0.05)) ** 2)

    def step(carry, _):
        p, opt = carry
        updates, opt = tx.update(jax.grad(loss)(p), opt, p)
        return (optax.apply_updates(p, updates), opt), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params


def test_armor_keeps_up_with_a_good_reference_the_data_does_not_cover(tmp_path):
    """The poster's claim, on the bandit: ARMOR improves on ANY reference, so with a reference
    far better than the data (d = +0.25, five data stds past the behaviour actions, just short
    of the cliff) it stays near that reference, for every beta of a sweep up to 3. With beta
    30 (the Bellman term 100 times heavier than the relative one) the critic all but trusts the
    pretrained model, whose extrapolation rises past the cliff, and the policy follows it: the
    control row, which shows the property needs the relative pessimism."""
    data = bandit_dataset()
    params = fit_reference_policy(lambda o: bandit_reference_action(o) + 0.25)
    path = tmp_path / "reference.npz"
    save_actor(path, params)
    config = dataclasses.replace(ARMOR_BANDIT, reference=str(path),
                                 reference_hidden_dims=(32, 32))
    algorithm = armor.ARMOR(config, BANDIT)
    betas = jnp.array([0.1, 1.0, 3.0, 30.0])
    states = jax.jit(jax.vmap(algorithm.init, in_axes=(0, None)))(
        jax.random.split(jax.random.PRNGKey(0), len(betas)), data)
    states = states.replace(beta=betas)
    reference = true_value(algorithm.reference_act, seed_slice(states, 0))
    behaviour = float(data.rewards.mean())
    assert reference > behaviour + 0.2, (reference, behaviour)  # good, and uncovered
    # pi starts AS pi_ref (same network): the claim is that the game does not pull it down.
    assert true_value(algorithm.act, seed_slice(states, 1)) == pytest.approx(reference)
    interval = jax.jit(jax.vmap(make_interval_fn(algorithm, 250), in_axes=(0, 0, None, 0)))
    failed = jnp.zeros(len(betas), bool)
    history = []
    for i in range(3):
        states, failed, _ = interval(states, failed, data,
                                     jax.random.split(jax.random.PRNGKey(20 + i), len(betas)))
        history.append([true_value(algorithm.act, seed_slice(states, b))
                        for b in range(len(betas))])
    assert not np.any(np.asarray(failed))
    history = np.array(history)  # (checkpoints, betas)
    assert history[:, :3].min() > reference - 0.07, (history, reference)
    assert history[:, 3].min() < reference - 0.2, (history, reference)


def test_armor_reference_files_are_checked(tmp_path):
    path = tmp_path / "small.npz"
    save_actor(path, fit_reference_policy(bandit_reference_action, (8,), steps=1))
    config = dataclasses.replace(ARMOR_BANDIT, reference=str(path))  # expects (256, 256)
    with pytest.raises(ValueError, match=r"small.npz.*expected.*\(256, 256\).*found"):
        armor.ARMOR(config, BANDIT)
    with pytest.raises(ValueError, match="armor.reference: expected 'bc'.*'nonsense'"):
        armor.ARMOR(dataclasses.replace(ARMOR_BANDIT, reference="nonsense"), BANDIT)
    with pytest.raises(PolicyFileError, match="missing"):
        armor.ARMOR(dataclasses.replace(ARMOR_BANDIT, reference=str(tmp_path / "no.npz")),
                    BANDIT)


def test_actor_loss_without_entropy_is_the_posters_and_stays_finite():
    """fixed_alpha = 0 is the poster's actor loss (5): -f_1(s, pi(s)), no entropy, and its
    gradient is finite (the alpha > 1 branch divides by alpha)."""
    agent = sac.Agent(sac.Config(hidden_dims=(16, 16)), BANDIT.obs_dim, BANDIT.act_dim)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.asarray(TEST_OBS[:64])
    config = dataclasses.replace(ARMOR_BANDIT, fixed_alpha=0.0)
    new, metrics = atac_part.actor_step(agent, state, config, obs, jax.random.PRNGKey(1))
    actions, _ = agent.sample(state.actor_params, obs, jax.random.PRNGKey(1))
    expected = -float(jnp.mean(agent.q(state.critic_params, obs, actions)[0]))
    assert float(metrics["actor_loss"]) == pytest.approx(expected, rel=1e-5)
    leaves = jax.tree_util.tree_leaves(new.actor_params)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    assert any(float(jnp.max(jnp.abs(a - b))) > 0 for a, b in zip(
        leaves, jax.tree_util.tree_leaves(state.actor_params), strict=True))


def test_warm_start_for_a_given_policy_clones_it_and_fits_the_critics_for_it():
    """ARMOR's warm start with a given pi_ref, on a chain with reward a (never terminal, gamma
    0.5) whose data holds actions -0.8 and +0.8 alike: with a target policy at +0.8 the actor
    clones it and the critics value its continuation, V = 0.8 / (1 - 0.5) = 1.6, so
    Q(s, +0.8) = 1.6 and Q(s, -0.8) = 0. ATAC's warm start clones the data's mixture (mean
    action about 0), whose continuation is worth about 0: Q(s, +0.8) about 0.8."""
    rng = np.random.default_rng(0)
    num = 2048
    obs = rng.normal(size=(num, BANDIT.obs_dim)).astype(np.float32)
    signs = np.where(np.arange(num) % 2 == 0, 1.0, -1.0)[:, None]
    actions = np.clip(0.8 * signs + 0.02 * rng.normal(size=(num, 1)), -0.99,
                      0.99).astype(np.float32)
    zeros = np.zeros(num, np.float32)
    data = Dataset.from_arrays(observations=obs, actions=actions, rewards=actions[:, 0],
                               next_observations=rng.normal(size=obs.shape).astype(np.float32),
                               terminals=zeros, timeouts=zeros, episode_ids=np.arange(num))
    config = atac_config(hidden_dims=(32, 32), batch_size=128, warmstart_lr=3e-3)
    config = dataclasses.replace(config, agent=dataclasses.replace(config.agent, gamma=0.5))
    agent = sac.Agent(config.agent, BANDIT.obs_dim, BANDIT.act_dim)

    def target(observations, key):
        return jnp.clip(0.8 + 0.02 * jax.random.normal(key, observations.shape[:-1] + (1,)),
                        -0.99, 0.99)

    def warm(target_policy):
        return jax.jit(lambda k: atac_part.warm_start(
            agent, agent.init(k), config, data, jax.random.fold_in(k, 1), 1500,
            target_policy=target_policy)[0])(jax.random.PRNGKey(0))

    test_obs = jnp.asarray(obs[:256])

    def q_at(state, action):
        return float(jnp.mean(agent.q(state.critic_params, test_obs,
                                      jnp.full((256, 1), action))))

    state = warm(target)
    assert abs(float(jnp.mean(agent.act(state, test_obs, jax.random.PRNGKey(2)))) - 0.8) < 0.05
    assert q_at(state, 0.8) == pytest.approx(1.6, abs=0.25)
    assert q_at(state, -0.8) == pytest.approx(0.0, abs=0.25)
    assert q_at(warm(None), 0.8) < 1.2
