"""Adversarially trained actor critic (ATAC; Cheng et al., 2022), the model-free sibling of ARMOR.

A Stackelberg game between a slow actor and a fast, relatively pessimistic critic:

- each of the twin critics f_i minimises ``mean(f_i(s, pi(s)) - f_i(s, a_data)) + beta * E_i``,
  written ``l / beta + E_i`` when beta > 1 (``atac.normalized_sum``), where the Bellman
  error ``E_i = (1 - w) * TD + w * residual`` mixes the TD error against the target critics (min
  of the twin targets) and the residual error whose target ``r + gamma f_i(s', a')`` keeps its
  gradient; after each step every critic layer's kernel is projected to Frobenius norm <=
  ``norm_constraint`` (``atac.project_l2``) and the targets follow with rate ``tau``;
- the actor maximises the FIRST critic ``f_1(s, pi(s))`` with SAC's entropy term (automatic
  temperature towards ``-act_dim``), at the slow rate 5e-7;
- init warm-starts (``atac.warm_start``): ``warmstart_steps`` of behaviour cloning and, in
  the same ``lax.scan``, a Bellman fit of the critics to that policy.

Settings from the paper and the public lightATAC code (``docs/algorithms.md#atac``): fast rate
5e-4 for critics and temperature, slow rate 5e-7 for the actor, beta 3 (3 to 16 in the paper),
w 0.5, tau 5e-3, 3x256 networks, 100k warm-start steps at the fast rate. Choices of ours: the
warm start projects the critics too (so every critic the game sees lies in the norm ball), and
the BC part is plain maximum likelihood (:mod:`offrl_jax.parts.cloning`) without lightATAC's
entropy bonus.

The pieces ARMOR shares (the Bellman error, the critic and actor steps, the warm start) are the
part :mod:`offrl_jax.parts.atac`.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.parts import atac, sac


@dataclasses.dataclass(frozen=True)
class ATACConfig:
    # Slow actor, fast critics; lightATAC tunes the temperature at the fast rate.
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), actor_lr=5e-7, critic_lr=5e-4,
                                   alpha_lr=5e-4, tau=5e-3)
    beta: float = 3.0
    residual_weight: float = 0.5  # w in E = (1 - w) TD + w residual
    norm_constraint: float = 100.0
    batch_size: int = 256
    fixed_alpha: float | None = None  # None: automatic temperature; 0.0: no entropy term
    warmstart_steps: int = 100_000
    warmstart_lr: float = 5e-4


@flax.struct.dataclass
class ATACState:
    agent: sac.State
    beta: jax.Array  # () float32, initialised from config.beta; a float leaf, so it sweeps


@dataclasses.dataclass(frozen=True)
class ATAC(Algorithm):
    config: ATACConfig
    name = "atac"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim))

    def init_updates(self, dataset_size: int) -> int:
        return self.config.warmstart_steps

    def init(self, key, dataset=None, pretrained=None) -> ATACState:
        config = self.config
        init_key, warm_key = jax.random.split(key)
        agent = self.agent.init(init_key)
        if config.warmstart_steps > 0:
            if dataset is None:
                raise ValueError("atac.init: warmstart_steps > 0 needs the dataset "
                                 "(pass it, or set warmstart_steps=0)")
            agent, _ = atac.warm_start(self.agent, agent, config, dataset, warm_key,
                                       config.warmstart_steps)
        return ATACState(agent, jnp.asarray(config.beta, jnp.float32))

    def update(self, state: ATACState, dataset, key):
        config, critic, agent = self.config, self.agent, state.agent
        batch_key, next_key, pi_key, actor_key = jax.random.split(key, 4)
        batch = sample_batch(dataset, batch_key, config.batch_size)
        obs, next_obs = batch.observations, batch.next_observations
        next_act, _ = critic.sample(agent.actor_params, next_obs, next_key)
        pi_act, _ = critic.sample(agent.actor_params, obs, pi_key)
        pi_act = jax.lax.stop_gradient(pi_act)
        target_next = critic.q(agent.target_critic_params, next_obs, next_act).min(0)
        size = config.batch_size

        # The critics: relative pessimism l(f, pi) + beta * E(f).
        def loss_fn(critic_params):
            # One critic call on [(s, a); (s', a'); (s, pi(s))]: (num_qs, 3B).
            q_all = critic.q(critic_params, jnp.concatenate([obs, next_obs, obs]),
                             jnp.concatenate([batch.actions, next_act, pi_act]))
            q, q_next, q_pi = q_all[:, :size], q_all[:, size:2 * size], q_all[:, 2 * size:]
            bellman = atac.bellman_error(q, q_next, target_next, batch.rewards, batch.terminals,
                                         config.agent.gamma, config.residual_weight)
            pessimism = jnp.mean(q_pi - q, axis=-1)
            loss = jnp.sum(atac.normalized_sum(pessimism, bellman, state.beta))
            return loss, (bellman, pessimism, q)

        (loss, (bellman, pessimism, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            agent.critic_params)
        agent = atac.critic_step(critic, agent, grads, config.norm_constraint)
        # The actor: maximise f_1(s, pi(s)) with entropy, at the slow rate.
        agent, actor_metrics = atac.actor_step(critic, agent, config, obs, actor_key)
        agent = agent.replace(step=agent.step + 1)
        return state.replace(agent=agent), {
            "critic_loss": loss, "bellman_loss": bellman.mean(), "pessimism": pessimism.mean(),
            "q_data_mean": q.mean(), **actor_metrics}

    def act(self, state: ATACState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# beta per dataset (docs/algorithms.md#atac): small beta (more pessimism, the policy stays near
# the data's) where the data is near-expert, the official command-line default 16 where it is
# broad or suboptimal. Unlisted tasks keep the lightATAC default of ATACConfig.
_BETA = {"medium": 16.0, "medium-replay": 16.0, "random": 16.0,
         "medium-expert": 1.0, "expert": 1.0}
TASK_SETTINGS = {f"{env}-{kind}": {"beta": beta}
                 for env in ("halfcheetah", "hopper", "walker2d") for kind, beta in _BETA.items()}

ALGORITHM = Registration("atac", ATACConfig, ATAC, TASK_SETTINGS)
