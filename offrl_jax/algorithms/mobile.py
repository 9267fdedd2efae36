"""MOBILE: model-Bellman inconsistency penalised offline policy optimisation (Sun et al., 2023).

1. Fit the dynamics ensemble on the dataset (:mod:`offrl_jax.parts.dynamics`; or take the one
   ``pretrain`` fitted, shared with MOPO, COMBO, MOReL and RAMBO) and initialise the SAC agent;
2. every ``rollouts.refresh_every`` updates, roll the current stochastic policy out in the model
   into the buffer, raw model rewards, no penalty at rollout time (:meth:`MOBILE.refresh`);
3. at every update, for each model row (s, a) of the minibatch: every elite draws
   ``num_samples`` next states s' from its Gaussian, each gives ``V(s') = min_j Q'_j(s', a')``,
   ``a' ~ pi(.|s')`` (target critics, current policy, one action per s', no entropy term)
   (:func:`bellman_targets`); the uncertainty u(s, a) is the standard deviation across elites
   of each elite's mean V(s'), the inconsistency of the members' Bellman estimates
   (:func:`model_bellman_inconsistency`). This is the official code's penalty
   (``penalty_target="next_value"``, the default, for which its beta table was tuned);
   ``penalty_target="bellman"`` takes the std of the whole ``r + gamma * V(s')`` instead;
4. the model rows' rewards become ``r - beta * u(s, a)`` (:meth:`MOBILE.penalized`), and one
   SAC step runs on ``real_ratio`` dataset rows and the penalised model rows, TD targets floored
   at ``min_target`` as in the official code (:meth:`MOBILE.update`).

Unlike MOPO's u, which comes from the model alone and is stored with each rollout, MOBILE's u
depends on the current critics and policy, so it is recomputed at every update: the update
reads the ensemble (one pass of the elites per step, not periodic work; compare
``docs/algorithms.md#pitfall-1``), and the actor and target critics run on ``num_samples x
elites`` next states per model row, the costliest part of an update. ``beta`` is
``state.penalty_coef``, a float32 leaf of the state, so a sweep over it vmaps like seeds (as
MOPO's lambda).

Per-dataset ``rollouts.horizon``, ``penalty_coef`` (and one ``real_ratio``) are in
:data:`TASK_SETTINGS`; every default's source: ``docs/algorithms.md#mobile``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.parts import dynamics, rollouts, sac
from offrl_jax.parts.dynamics import EnsembleState, sample_members
from offrl_jax.parts.rollouts import Transitions

PENALTY_TARGETS = ("next_value", "bellman")


@dataclasses.dataclass(frozen=True)
class MOBILEConfig:
    """``penalty_target``: "next_value" (default) takes the std across elites of ``V(s')``
    alone, without the reward or gamma (the official code's ``compute_lcb``, for which its beta
    table was tuned); "bellman" the std of the whole ``r + gamma V(s')``, with each draw's own
    reward (the paper's wording, "Bellman estimates").
    ``min_target``: floor of the TD targets; the official code's 0.0 assumes returns are never
    negative (true of hopper and walker2d, whose alive bonus keeps rewards positive); None: no
    floor."""

    agent: sac.Config = sac.Config(actor_lr=1e-4, alpha_lr=1e-4, backup_entropy=False)
    dynamics: dynamics.Config = dynamics.Config()
    rollouts: rollouts.Config = rollouts.Config()
    batch_size: int = 256
    real_ratio: float = 0.05
    num_samples: int = 10  # (s', r) draws per elite and model row
    penalty_target: str = "next_value"
    penalty_coef: float = 1.0  # beta; only the initial value of state.penalty_coef
    min_target: float | None = 0.0

    def __post_init__(self):
        if self.penalty_target not in PENALTY_TARGETS:
            raise ValueError(f"MOBILEConfig.penalty_target must be one of {PENALTY_TARGETS}, "
                             f"found {self.penalty_target!r}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"MOBILEConfig.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")
        if self.num_samples < 1:
            raise ValueError(f"MOBILEConfig.num_samples must be >= 1, found {self.num_samples}")


@flax.struct.dataclass
class MOBILEState:
    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    penalty_coef: jax.Array  # () float32, beta


ValueFn = Callable[[jax.Array, jax.Array], jax.Array]


def bellman_targets(model: EnsembleState, key, obs, act, value_fn: ValueFn, gamma: float,
                    num_samples: int, with_reward: bool = True) -> jax.Array:
    """Every elite's Bellman targets for the same (s, a): ``(num_samples, elites, B)``.

    obs (B, obs_dim), act (B, act_dim); each elite draws ``num_samples`` (s', r) from its
    Gaussian; ``value_fn(key, next_obs (..., obs_dim)) -> (...)`` is V(s'). Targets are
    ``r + gamma * V(s')``, or ``V(s')`` alone when ``with_reward`` is False (the official code's
    quantity). Terminations are not applied: the official code does not either.
    """
    sample_key, value_key = jax.random.split(key)
    next_obs, rewards = sample_members(rollouts.elites_only(model), sample_key, obs, act,
                                       num_samples)
    values = value_fn(value_key, next_obs)
    return rewards + gamma * values if with_reward else values


def model_bellman_inconsistency(targets) -> jax.Array:
    """MOBILE's u(s, a), ``(B,)``, from :func:`bellman_targets` ``(num_samples, members, B)``:
    each member's Bellman estimate is the mean of its sampled targets, and u is their standard
    deviation across members (with Bessel's correction, as ``torch.std`` in the official code;
    0 with one member, where no disagreement can be measured)."""
    per_member = jnp.mean(targets, axis=0)
    members = per_member.shape[0]
    return jnp.std(per_member, axis=0, ddof=1 if members > 1 else 0)


@dataclasses.dataclass(frozen=True)
class MOBILE(dynamics.SharedModel, Algorithm):
    """``MOBILE(config, spec)``: ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``."""

    config: MOBILEConfig
    name = "mobile"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim),
                    rollouts=rollouts.Rollouts(self.config.rollouts, self.spec))

    def init(self, key, dataset, pretrained=None) -> MOBILEState:
        """Step 1. ``pretrained``: this seed's :meth:`pretrain` model (else fitted here)."""
        model = dynamics.fit_or_take(key, self.spec, dataset, self.config.dynamics, pretrained)
        agent = self.agent.init(jax.random.split(key, 2)[1])
        return MOBILEState(agent, model, self.rollouts.init(),
                           jnp.asarray(self.config.penalty_coef, jnp.float32))

    def refresh(self, state: MOBILEState, dataset, key) -> MOBILEState:
        """Step 2: model rollouts of the current stochastic policy into the buffer, no
        penalty."""
        return state.replace(rollouts=self.rollouts.refresh(
            state.rollouts, state.model, dataset, key, self.agent.policy_fn(state.agent)))

    def next_value_fn(self, agent: sac.State) -> ValueFn:
        """V(s') of the penalty: the target critics' minimum at one action of the current
        policy, no entropy term (the official code's choice)."""
        def value(key, next_obs):
            # One row per state: XLA on a CPU compiles the networks on (samples, elites, B, obs)
            # inputs ~3x slower than on a flat batch, for the same numbers.
            flat = next_obs.reshape(-1, next_obs.shape[-1])
            next_act, _ = self.agent.sample(agent.actor_params, flat, key)
            values = self.agent.q(agent.target_critic_params, flat, next_act).min(0)
            return values.reshape(next_obs.shape[:-1])

        return value

    def inconsistency(self, state: MOBILEState, obs, act, key) -> jax.Array:
        """Step 3: u(s, a) ``(B,)`` for the model rows (s, a), a constant of the update."""
        targets = bellman_targets(state.model, key, obs, act, self.next_value_fn(state.agent),
                                  self.config.agent.gamma, self.config.num_samples,
                                  with_reward=self.config.penalty_target == "bellman")
        return jax.lax.stop_gradient(model_bellman_inconsistency(targets))

    @staticmethod
    def penalized(model_rows: Transitions, uncertainty, penalty_coef) -> Transitions:
        """Step 4: the model rows with rewards ``r - beta * u(s, a)``."""
        return model_rows.replace(rewards=model_rows.rewards - penalty_coef * uncertainty)

    def critic_step(self, agent: sac.State, batch: Transitions, key):
        """SAC's critic step, its TD target floored at ``config.min_target``."""
        target = self.agent.td_target(agent, batch, key)
        if self.config.min_target is not None:
            target = jnp.maximum(target, self.config.min_target)
        target = jax.lax.stop_gradient(target)

        def loss_fn(critic_params):
            q = self.agent.q(critic_params, batch.observations, batch.actions)
            return jnp.mean(jnp.sum((q - target) ** 2, axis=0)), q

        (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(agent.critic_params)
        return self.agent.apply_critic_grads(agent, grads), {"critic_loss": loss,
                                                             "q_mean": q.mean()}

    def update(self, state: MOBILEState, dataset, key):
        """Steps 3 and 4: penalise the model rows, then one SAC step on the mixed batch."""
        config = self.config
        batch_key, penalty_key, critic_key, actor_key = jax.random.split(key, 4)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        uncertainty = self.inconsistency(state, model_rows.observations, model_rows.actions,
                                         penalty_key)
        batch = rollouts.concatenate(real, self.penalized(model_rows, uncertainty,
                                                          state.penalty_coef))
        agent, critic_metrics = self.critic_step(state.agent, batch, critic_key)
        agent, actor_metrics = self.agent.update_actor_and_alpha(agent, batch, actor_key)
        agent = agent.replace(step=agent.step + 1)
        mean_u = jnp.mean(uncertainty) if uncertainty.size else jnp.zeros(())
        return state.replace(agent=agent), {**critic_metrics, **actor_metrics, **batch_metrics,
                                            "model_inconsistency": mean_u,
                                            **rollouts.metrics(state.rollouts)}

    def act(self, state: MOBILEState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# (rollouts.horizon, penalty_coef = beta) per dataset: docs/algorithms.md#mobile.
_H_BETA = {
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 5.0), "walker2d-random": (5, 2.0),
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 1.5), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.1), "hopper-medium-replay": (5, 0.1),
    "walker2d-medium-replay": (1, 0.5),
    "halfcheetah-medium-expert": (5, 1.0), "hopper-medium-expert": (5, 1.5),
    "walker2d-medium-expert": (1, 1.5),
}
# The official hopper-medium and -replay configs fix the temperature (auto_alpha=False, alpha 0.2):
# alpha starts at 0.2 and a zero learning rate keeps it there.
_FIXED_ALPHA = {"agent.init_alpha": 0.2, "agent.alpha_lr": 0.0}
_OTHER = {"halfcheetah-medium-expert": {"real_ratio": 0.5},
          "hopper-medium": _FIXED_ALPHA, "hopper-medium-replay": _FIXED_ALPHA}
TASK_SETTINGS = {task: {"rollouts.horizon": h, "penalty_coef": beta, **_OTHER.get(task, {})}
                 for task, (h, beta) in _H_BETA.items()}

# version 2: the official penalty by default (version 1: the Bellman-target std).
ALGORITHM = Registration("mobile", MOBILEConfig, MOBILE, TASK_SETTINGS, version=2)
