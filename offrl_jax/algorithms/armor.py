"""ARMOR (Bhardwaj et al., 2023): adversarial model for offline RL, as Algorithm 1 of the poster.

One dynamics model M (no ensemble), twin critics f_1, f_2 and the actor pi play against a fixed
reference policy pi_ref (behaviour cloning by default; any policy, ``ArmorConfig.reference``).
Per update k:

3. a minibatch of real transitions and one of (s, a) pairs from the model buffer D_model;
4. D_M: the model's own transitions (s, a, r_M, s'_M) for all those (s, a), with
   ``r_M = R_M(s, a)`` (predicted mean) and ``s'_M = s + mu + sigma * eps`` (reparameterised, so
   the gradient reaches the model's mean and variance);
5. the adversary (critics AND model, fast rate) minimises, per critic i, (4)::

       l_i = E_DM[f_i(s, pi(s)) - f_i(s, pi_ref(s))]
             + beta * (E^w_DM(f_i, M, pi) + lambda * E_Dreal(M))

   written ``l_i / beta`` when beta > 1 (as ATAC) (:meth:`ARMOR.adversary_loss`). beta weighs
   the Bellman error and the model fit together, so a beta sweep keeps their ratio (lambda)
   fixed. E^w mixes TD and residual errors with weight w
   (:func:`offrl_jax.parts.atac.bellman_error`); its (r, s') come from the model, so its
   gradient reaches the model. E_D(M) is the Gaussian NLL of s' plus a reward term
   (``ArmorConfig.model_fit``: by default the reward's Gaussian NLL at the pretrained model's
   own reward error, :func:`model_fit`), plus the pretraining's log-variance bound term. The
   model steps on ``grad_M (l_1 + l_2)``; each critic on its own ``l_i``, is L2-projected and
   its target follows with rate tau;
6. the actor (slow rate) minimises (5) ``-E[f_1(s, pi(s)) - f_1(s, pi_ref(s))]`` over the D_M
   states, with ATAC's entropy term (:func:`offrl_jax.parts.atac.actor_step`; the poster's
   (5) has none: ``fixed_alpha=0`` removes it; why the default keeps it:
   ``docs/algorithms.md#why-the-actor-keeps-an-entropy-term``) (:func:`update`);
7-8. every H steps the model states of pi and pi_ref restart from the real minibatch's states;
   the pairs (s, pi(s)) and (s, pi_ref(s)) join D_model and the states advance one detached model
   step.

Steps 7-8 cost two policy calls and one model call on B states, so they run inside every update
with arithmetic masking (``jnp.where`` on the reset flag), no ``lax.cond`` and no refresh hook:
under the Trainer's vmapped scan both would run every step anyway
(``docs/algorithms.md#pitfalls``).
They run at the START of update k (reset when ``k % H == 0``, from update k's real minibatch),
before D_model is sampled: the same policy and model as at the end of update k - 1, so the same
algorithm, except that update k may sample the pairs it has just added. Two reasons: D_model is
never empty when sampled (no special first step), and the buffer write comes before the read, so
XLA updates the ring in place; write-after-read, with the written states independent of the read
batch, made XLA copy the whole ring every update (half the update time at 1M entries on a CPU).

With beta = 0 the loss does not depend on the model (the relative term only reads D_M's
states), so the model stays put, whatever lambda.

The pretrained model is kept beside the adversarial one (``ArmorState.fitted_model_params``): each
update measures both on the real minibatch (next-state NLL and MSE, reward MSE, E_D), so the logs
show how far the adversary's model has left the data (``model_*`` against ``fitted_model_*``;
``model_fit_excess`` is E_D(M) - E_D(M_fitted), the alpha the run realises).

Initialisation (:func:`init`, all compiled): pi and pi_ref from ATAC's warm start (behaviour cloning
plus a Bellman fit of the critics on real data; pi starts AS pi_ref). With a given pi_ref (a
shipped policy or a file), the warm start clones pi_ref's actions on the data's states instead
and fits the critics for pi_ref, and pi takes pi_ref's weights where the networks match: the
game then starts at pi = pi_ref with critics that value pi_ref. The model pretrained by
maximum likelihood (the dynamics part, :mod:`offrl_jax.parts.dynamics`, with one member and no
bootstrap, keyed like the model-based algorithms' ensembles, so the training loop can fit it once
per seed and reuse it across runs); D_model empty.

Conventions of ours, where the poster is silent:
- a rollout state whose model transition is terminal (the task's termination function, or not
  finite) restarts from the real minibatch's state at once (``docs/algorithms.md#pitfalls``);
  D_M marks
  such transitions terminal, so f is not bootstrapped past them;
- the next action a' ~ pi(s'_M) in the Bellman error is a function of s'_M, so the model's
  gradient also flows through pi's input;
- D_model stores full model transitions (the ring buffer's layout); only (s, a) are read. At 1M
  entries that is 108 MB per seed for hopper (27 floats a row), 928 MB for ant.

Defaults marked (to verify) are recalled, not checked against the paper: fast lr 5e-4, slow lr
5e-7, horizon 10, beta, lambda, w, the buffer size, batch sizes and the warm-start length
(``docs/algorithms.md#armor``).
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import Dataset, sample_batch
from offrl_jax.networks import TanhGaussianPolicy, sample_tanh_gaussian, squashed_action
from offrl_jax.parts import atac, dynamics, sac
from offrl_jax.parts import buffer as model_buffer
from offrl_jax.parts import dynamics as ensemble

MODEL_FITS = ("fitted", "vmax", "nll")


@dataclasses.dataclass(frozen=True)
class ArmorConfig:
    # Agent: actor pi, twin critics, temperature (ATAC's networks and rates); slow actor lr,
    # fast critic lr (to verify).
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), actor_lr=5e-7, critic_lr=5e-4,
                                   alpha_lr=5e-4, tau=5e-3)
    # The single dynamics model M: maximum likelihood pretraining (MBPO's 4 x 200 network).
    dynamics: dynamics.Config = dynamics.Config(members=1, elites=1, bootstrap=False,
                                                weight_decays=dynamics.PAPER_WEIGHT_DECAYS)
    model_lr: float = 5e-4  # fast: the model is part of the adversary (to verify)
    # None: ATAC's entropy term with its automatic temperature; 0.0: the poster's loss (5),
    # without entropy (docs/algorithms.md#armor on why the default keeps it).
    fixed_alpha: float | None = None
    # pi_ref: "bc" (behaviour cloning, the warm start), a shipped behaviour policy of the task's
    # environment by role ("medium", "expert"), or the path of an actor file (.npz, as
    # offrl_jax.policies writes them) whose network has reference_hidden_dims.
    reference: str = "bc"
    reference_hidden_dims: tuple[int, ...] = (256, 256)
    # Adversary loss (4): relative + beta * (E^w + lambda * E_D(M)).
    beta: float = 3.0  # (to verify)
    # lambda, measured on hopper-medium-replay (docs/algorithms.md#how-strongly-the-model-is-
    # anchored-to-the-data). A float leaf of the state: it sweeps.
    model_fit_weight: float = 1.0
    residual_weight: float = 0.5  # w: E^w = (1 - w) TD + w residual (to verify)
    # E_D(M)'s reward term: "fitted", the reward's Gaussian NLL (constants dropped) at the
    # pretrained model's own reward error, (R_M - r)^2 / (2 mse_fitted); "vmax", the poster's
    # (R_M - r)^2 / V_max^2; or "nll", the model's own Gaussian likelihood of r, as of s'
    # (docs/algorithms.md#armor on the choice).
    model_fit: str = "fitted"
    v_max: float | None = None  # "vmax" only; None: max|r| / (1 - gamma)
    # "fitted" only: transitions of the data on which the pretrained model's reward error is
    # measured at init.
    fitted_error_samples: int = 10_000
    norm_constraint: float = 100.0
    # Data: real and model minibatches, model rollouts.
    batch_size: int = 256  # real minibatch, also the number of model states per policy
    model_batch_size: int = 256  # D_model minibatch (to verify)
    rollout_horizon: int = 10  # H (to verify)
    model_buffer_capacity: int = 1_000_000  # (to verify)
    # Initialisation: warm start (BC = pi_ref, critic fit) and model pretraining.
    warmstart_steps: int = 100_000  # (to verify)
    warmstart_lr: float = 5e-4

    def __post_init__(self):
        if self.rollout_horizon < 1 or self.model_buffer_capacity < 1:
            raise ValueError("ArmorConfig: rollout_horizon and model_buffer_capacity must be >= 1")
        if min(self.beta, self.model_fit_weight) < 0 or not 0 <= self.residual_weight <= 1:
            raise ValueError("ArmorConfig: beta and model_fit_weight must be >= 0 and "
                             "residual_weight in [0, 1]")
        if self.model_fit not in MODEL_FITS:
            raise ValueError(f"ArmorConfig.model_fit must be one of {', '.join(MODEL_FITS)}, "
                             f"found {self.model_fit!r}")
        if self.fitted_error_samples < 1:
            raise ValueError(f"ArmorConfig.fitted_error_samples must be >= 1, found "
                             f"{self.fitted_error_samples}")
        if self.dynamics.members != 1:
            raise ValueError(f"ArmorConfig: dynamics.members must be 1 (ARMOR's single model), "
                             f"found {self.dynamics.members}")


@flax.struct.dataclass
class ArmorState:
    """agent: pi, f_1, f_2, their targets and the temperature; ref_actor_params: pi_ref (fixed);
    model: the single dynamics model (leaves with a leading member axis of 1) and model_opt;
    model_buffer: D_model; rollout_obs ``(2, batch_size, obs)``: the current model states of pi
    (row 0) and pi_ref (row 1); fitted_model_params: the pretrained model's parameters (fixed,
    the yardstick of the logs); reward_fit_scale: the weight of the reward MSE in E_D(M) (1 /
    V_max^2, or 1 / (2 mse_fitted)); beta, model_fit_weight: loss (4)'s beta and lambda."""

    agent: sac.State
    ref_actor_params: dict
    model: ensemble.EnsembleState
    model_opt: optax.OptState
    model_buffer: model_buffer.ModelBuffer
    rollout_obs: jax.Array
    fitted_model_params: dict
    reward_fit_scale: jax.Array
    beta: jax.Array  # () float32, initialised from config.beta; a float leaf, so it sweeps
    model_fit_weight: jax.Array  # () float32, lambda; sweeps too


def model_transition(model: ensemble.EnsembleState, params, obs, act, noise):
    """The model's ``(s'_M, r_M)`` for ``(s, a)`` ``(N, obs)``, ``(N, act)``: ``s'_M = s + mu +
    sigma * noise`` (``noise`` standard normal ``(N, obs)``), ``r_M`` the predicted mean ``(N,)``.
    Differentiable in ``params``."""
    mean, logvar = ensemble.predict(model.replace(params=params), obs, act)
    mean, logvar, d = mean[0], logvar[0], model.obs_dim
    return obs + mean[:, :d] + jnp.exp(0.5 * logvar[:, :d]) * noise, mean[:, d]


def model_fit(model: ensemble.EnsembleState, params, batch, reward_fit_scale,
              reward_nll: bool = False):
    """E_D(M) on real transitions, batch means: ``-log P_M(s'|s, a)`` (Gaussian, summed over obs
    dims), the reward term, and the log-variance bound term of pretraining. The reward term is
    ``reward_fit_scale * (R_M(s, a) - r)^2`` (1 / V_max^2, the poster's, or 1 / (2 mse) at the
    pretrained model's reward error: ``ArmorConfig.model_fit``), or with ``reward_nll`` the
    model's own Gaussian ``-log P_M(r|s, a)``.
    Returns ``(fit, errors)``, ``errors`` a dict of batch means: ``nll`` (of s' alone),
    ``state_error`` (MSE of the predicted s' mean, over obs dims) and ``reward_error`` (MSE of
    R_M)."""
    mean, logvar = ensemble.predict(model.replace(params=params), batch.observations,
                                    batch.actions)
    mean, logvar, d = mean[0], logvar[0], model.obs_dim
    target = jnp.concatenate([batch.next_observations - batch.observations,
                              batch.rewards[:, None]], axis=-1)
    squared = jnp.square(mean - target)
    per_dim = 0.5 * (squared * jnp.exp(-logvar) + logvar + math.log(2 * math.pi))
    nll = jnp.mean(jnp.sum(per_dim[:, :d], axis=-1))
    reward_error = jnp.mean(squared[:, d])
    p = params["params"]
    dims = d + 1 if reward_nll else d
    bounds = model.config.logvar_bound_coef * (jnp.sum(p["max_logvar"][..., :dims])
                                               - jnp.sum(p["min_logvar"][..., :dims]))
    reward_term = (jnp.mean(per_dim[:, d]) if reward_nll
                   else reward_fit_scale * reward_error)
    return nll + reward_term + bounds, {"nll": nll, "state_error": jnp.mean(squared[:, :d]),
                                        "reward_error": reward_error}


def fitted_reward_error(model: ensemble.EnsembleState, dataset, key, samples: int):
    """The model's reward MSE on ``samples`` transitions of ``dataset`` drawn with ``key``
    (at most the dataset's size; a fixed sample, so init stays cheap on any dataset)."""
    batch = sample_batch(dataset, key, samples)
    mean, _ = ensemble.predict(model, batch.observations, batch.actions)
    return jnp.mean(jnp.square(mean[0, :, model.obs_dim] - batch.rewards))


def _done(termination_fn, next_obs):
    finite = jnp.all(jnp.isfinite(next_obs), axis=-1)
    return jnp.asarray(termination_fn(next_obs), bool) | ~finite


@flax.struct.dataclass
class AdversaryBatch:
    """The inputs of loss (4). obs, act ``(N, ...)``: D_M's (s, a), the real minibatch then the
    D_model minibatch; pi_act, ref_act ``(N, act)``: samples of pi and pi_ref at obs (constants);
    noise ``(N, obs)``: the standard normal draw of s'_M; real: the real minibatch (a
    ``Dataset``), on which E_D(M) is measured."""

    obs: jax.Array
    act: jax.Array
    pi_act: jax.Array
    ref_act: jax.Array
    noise: jax.Array
    real: Dataset


@dataclasses.dataclass(frozen=True)
class ARMOR(dynamics.SharedModel, Algorithm):
    """``ARMOR(config, spec)``: ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``."""

    config: ArmorConfig
    name = "armor"

    def __post_init__(self):
        config = self.config
        if config.reference == "bc":
            reference, hidden = None, config.agent.hidden_dims
        else:
            reference, hidden = load_reference(config.reference, self.spec), \
                config.reference_hidden_dims
        self._parts(agent=sac.Agent(config.agent, self.spec.obs_dim, self.spec.act_dim),
                    model_tx=optax.adam(config.model_lr),
                    ref_actor=TanhGaussianPolicy(tuple(hidden), self.spec.act_dim),
                    reference_params=reference)
        if reference is not None:
            check_reference(reference, self.ref_actor, self.spec, config.reference)

    def reference_sample(self, ref_params, obs, key):
        """Actions ``a ~ pi_ref(.|s)`` for ``obs`` ``(..., obs)``."""
        return sample_tanh_gaussian(*self.ref_actor.apply(ref_params, obs), key)[0]

    def init_updates(self, dataset_size: int) -> int:
        return self.config.warmstart_steps

    def init(self, key, dataset, pretrained=None) -> ArmorState:
        """``pretrained``: this seed's :meth:`pretrain` model (else fitted here); the warm start
        always runs here."""
        config, spec = self.config, self.spec
        if dataset is None:
            raise ValueError("armor.init needs the dataset (model pretraining and pi_ref)")
        agent_key, warm_key = jax.random.split(key)
        error_key = jax.random.fold_in(key, 7)
        agent = self.agent.init(agent_key)
        ref_params = None
        if self.reference_params is not None:
            ref_params = jax.tree_util.tree_map(jnp.asarray, self.reference_params)
        if config.warmstart_steps > 0:
            # A given pi_ref: pi clones it and the critics are fitted for it, so the game starts
            # at pi = pi_ref with critics that value pi_ref (ATAC's warm start would fit them
            # for the data's behaviour clone instead).
            target = None if ref_params is None else (
                lambda obs, k: self.reference_sample(ref_params, obs, k))
            agent, _ = atac.warm_start(self.agent, agent, config, dataset, warm_key,
                                       config.warmstart_steps, target_policy=target)
        model = dynamics.fit_or_take(key, spec, dataset, config.dynamics, pretrained)
        if ref_params is None:
            ref_params = agent.actor_params
        elif _same_shapes(ref_params, agent.actor_params):
            agent = agent.replace(actor_params=ref_params)  # pi starts AS pi_ref
        if config.model_fit == "fitted":
            mse = fitted_reward_error(model, dataset, error_key,
                                      min(config.fitted_error_samples, int(dataset.size)))
            reward_fit_scale = 0.5 / jnp.maximum(mse, 1e-8)
        else:
            if config.v_max is None:
                v_max = jnp.max(jnp.abs(dataset.rewards)) / (1.0 - config.agent.gamma)
            else:
                v_max = jnp.asarray(config.v_max, jnp.float32)
            reward_fit_scale = 1.0 / jnp.maximum(jnp.square(v_max), 1e-12)
        return ArmorState(
            agent=agent,
            ref_actor_params=ref_params,
            model=model,
            model_opt=self.model_tx.init(model.params),
            model_buffer=model_buffer.init_buffer(config.model_buffer_capacity, spec.obs_dim,
                                                  spec.act_dim),
            rollout_obs=jnp.zeros((2, config.batch_size, spec.obs_dim), jnp.float32),
            fitted_model_params=model.params,
            reward_fit_scale=jnp.asarray(reward_fit_scale, jnp.float32),
            beta=jnp.asarray(config.beta, jnp.float32),
            model_fit_weight=jnp.asarray(config.model_fit_weight, jnp.float32),
        )

    def expand_model_data(self, state: ArmorState, reset_obs, key, reset) -> ArmorState:
        """Algorithm 1, steps 7-8: if ``reset``, both model states restart from ``reset_obs``
        ``(B, obs)``; (s, pi(s)) and (s, pi_ref(s)) join D_model; the states advance one
        detached model step (a terminal or non-finite next state restarts from ``reset_obs``)."""
        pi_key, ref_key, noise_key = jax.random.split(key, 3)
        starts = jnp.where(reset, reset_obs[None], state.rollout_obs)
        pi_act, _ = self.agent.sample(state.agent.actor_params, starts[0], pi_key)
        ref_act = self.reference_sample(state.ref_actor_params, starts[1], ref_key)
        actions = jnp.stack([pi_act, ref_act]).reshape(-1, pi_act.shape[-1])
        flat_starts = starts.reshape(-1, starts.shape[-1])
        next_obs, rewards = model_transition(state.model, state.model.params, flat_starts,
                                             actions,
                                             jax.random.normal(noise_key, flat_starts.shape))
        next_obs, rewards = next_obs.reshape(starts.shape), rewards.reshape(starts.shape[:2])
        actions = actions.reshape(starts.shape[:2] + pi_act.shape[-1:])
        done = _done(self.spec.termination_fn, next_obs)
        next_obs = jnp.where(jnp.isfinite(next_obs), next_obs, 0.0)
        transitions = model_buffer.Transitions(starts, actions, jnp.nan_to_num(rewards),
                                               next_obs, done.astype(jnp.float32))
        buffer = model_buffer.add(state.model_buffer, transitions, jnp.ones(done.shape, bool))
        rollout_obs = jnp.where(done[..., None], reset_obs[None], next_obs)
        return state.replace(model_buffer=buffer,
                             rollout_obs=jax.lax.stop_gradient(rollout_obs))

    def adversary_batch(self, state: ArmorState, real, key) -> AdversaryBatch:
        """Algorithm 1, steps 3-4: with ``real`` the D_real minibatch, a D_model minibatch
        (D_model must not be empty) and what D_M needs."""
        sim_key, pi_key, ref_key, noise_key = jax.random.split(key, 4)
        simulated = model_buffer.sample(state.model_buffer, sim_key,
                                        self.config.model_batch_size)
        obs = jnp.concatenate([real.observations, simulated.observations])
        pi_act = self.agent.sample(state.agent.actor_params, obs, pi_key)[0]
        ref_act = self.reference_sample(state.ref_actor_params, obs, ref_key)
        return AdversaryBatch(obs=obs, act=jnp.concatenate([real.actions, simulated.actions]),
                              pi_act=jax.lax.stop_gradient(pi_act),
                              ref_act=jax.lax.stop_gradient(ref_act),
                              noise=jax.random.normal(noise_key, obs.shape), real=real)

    def adversary_loss(self, state: ArmorState, critic_params, model_params,
                       batch: AdversaryBatch, key, beta, model_fit_weight):
        """Algorithm 1, step 5: loss (4), ``relative + beta * (E^w + lambda * E_D(M))``, summed
        over the twin critics (each critic's gradient is that of its own l_i, the model's that
        of l_1 + l_2), divided by max(1, beta). ``beta`` and ``model_fit_weight`` (lambda) are
        arguments so they may be traced; :meth:`update` passes the state's. Returns ``(loss,
        metrics)``."""
        config, critic, agent, model = self.config, self.agent, state.agent, state.model
        obs, size = batch.obs, batch.obs.shape[0]
        next_obs, rewards = model_transition(model, model_params, obs, batch.act, batch.noise)
        terminals = _done(self.spec.termination_fn,
                          jax.lax.stop_gradient(next_obs)).astype(jnp.float32)
        next_act, _ = critic.sample(agent.actor_params, next_obs, key)
        # One critic call on [(s, a); (s, pi(s)); (s, pi_ref(s)); (s'_M, a')]: (num_qs, 4N).
        q_all = critic.q(critic_params, jnp.concatenate([obs, obs, obs, next_obs]),
                         jnp.concatenate([batch.act, batch.pi_act, batch.ref_act, next_act]))
        q, q_pi, q_ref, q_next = (q_all[:, i * size:(i + 1) * size] for i in range(4))
        target_next = critic.q(agent.target_critic_params, next_obs, next_act).min(0)
        bellman = atac.bellman_error(q, q_next, target_next, rewards, terminals,
                                     config.agent.gamma, config.residual_weight)
        relative = jnp.mean(q_pi - q_ref, axis=-1)
        reward_nll = config.model_fit == "nll"
        fit, errors = model_fit(model, model_params, batch.real, state.reward_fit_scale,
                                reward_nll)
        per_critic = relative + beta * (bellman + model_fit_weight * fit)
        loss = jnp.sum(per_critic) / jnp.maximum(1.0, beta)
        fitted_fit, fitted = model_fit(model, state.fitted_model_params, batch.real,
                                       state.reward_fit_scale, reward_nll)
        return loss, {"adversary_loss": loss, "relative_value": relative[0],
                      "bellman_loss": bellman.mean(), "q_mean": q.mean(),
                      "model_nll": errors["nll"], "model_state_error": errors["state_error"],
                      "model_reward_error": errors["reward_error"],
                      "fitted_model_nll": fitted["nll"],
                      "fitted_model_state_error": fitted["state_error"],
                      "fitted_model_reward_error": fitted["reward_error"],
                      "model_fit_excess": fit - fitted_fit,
                      "model_reward_mean": rewards.mean(),
                      "model_terminal_rate": terminals.mean()}

    def update(self, state: ArmorState, dataset, key):
        """One iteration k of Algorithm 1 (steps 3-8)."""
        config, model = self.config, state.model
        real_key, expand_key, batch_key, next_key, actor_key = jax.random.split(key, 5)
        real = sample_batch(dataset, real_key, config.batch_size)
        # 7-8 (moved first, see the module doc): reset every H updates, expand D_model.
        reset = state.agent.step % config.rollout_horizon == 0
        state = self.expand_model_data(state, real.observations, expand_key, reset)
        batch = self.adversary_batch(state, real, batch_key)
        # 5: the adversary, critics and model in one differentiation.
        (_, metrics), (critic_grads, model_grads) = jax.value_and_grad(
            self.adversary_loss, argnums=(1, 2), has_aux=True)(
            state, state.agent.critic_params, model.params, batch, next_key, state.beta,
            state.model_fit_weight)
        agent = atac.critic_step(self.agent, state.agent, critic_grads, config.norm_constraint)
        updates, model_opt = self.model_tx.update(model_grads, state.model_opt, model.params)
        model = model.replace(params=optax.apply_updates(model.params, updates))
        # 6: the actor against f_1 (f_1(s, pi_ref(s)) is a constant of the actor's loss).
        agent, actor_metrics = atac.actor_step(self.agent, agent, config, batch.obs, actor_key)
        state = state.replace(agent=agent.replace(step=agent.step + 1), model=model,
                              model_opt=model_opt)
        return state, {**metrics, **actor_metrics,
                       "model_buffer_size": state.model_buffer.size.astype(jnp.float32)}

    def act(self, state: ArmorState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)

    def reference_act(self, state: ArmorState, obs, key, deterministic: bool = True):
        """pi_ref's action (the reference the policy must not fall below)."""
        return squashed_action(*self.ref_actor.apply(state.ref_actor_params, obs), key,
                               deterministic)


def _same_shapes(a, b) -> bool:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
            and all(x.shape == y.shape for x, y in zip(leaves_a, leaves_b, strict=True)))


def load_reference(reference: str, spec) -> dict:
    """pi_ref's parameters (numpy) for ``ArmorConfig.reference``: a shipped role of
    ``spec.name``'s behaviour policies, or an actor file."""
    from offrl_jax import policies

    if reference.endswith(".npz"):
        return policies.load_actor(reference)
    if reference in ("medium", "expert"):
        return policies.load_role(spec.name, reference)
    raise ValueError(f"armor.reference: expected 'bc', 'medium', 'expert' or the path of an "
                     f"actor file ending in .npz, found {reference!r}")


def check_reference(ref_params, ref_actor, spec, source: str) -> None:
    """Raise a ValueError naming the file and the expected and found shapes unless
    ``ref_params`` fit ``ref_actor`` on ``spec``'s observations and actions."""
    expected = jax.eval_shape(ref_actor.init, jax.random.PRNGKey(0),
                              jnp.zeros((1, spec.obs_dim)))
    shapes = lambda tree: jax.tree_util.tree_map(lambda x: tuple(x.shape), tree)  # noqa: E731
    if shapes(expected) != shapes(ref_params):
        raise ValueError(f"armor.reference {source}: parameter shapes expected "
                         f"{shapes(expected)} (reference_hidden_dims="
                         f"{tuple(ref_actor.hidden_dims)}, obs {spec.obs_dim}, act "
                         f"{spec.act_dim}), found {shapes(ref_params)}")


# The ARMOR paper's per-dataset settings are not checked yet; the defaults above apply to every
# task (docs/algorithms.md#armor).
# version 3: with a given pi_ref, the warm start clones pi_ref and fits the critics for it
# (version 2: for the data's behaviour clone). Version 2: loss (4) with beta over the Bellman
# error and lambda E_D together, the reward anchored at the pretrained model's error, pi_ref
# scored (version 1: lambda outside beta).
ALGORITHM = Registration("armor", ArmorConfig, ARMOR, version=3)
