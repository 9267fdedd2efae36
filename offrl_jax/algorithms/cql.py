"""Conservative Q-learning (Kumar et al., 2020), CQL(H) on a SAC agent, as pure functions.

Per update, on a dataset minibatch:
1. the critic step: Bellman error plus ``cql_weight`` times the conservative term of
   :mod:`offrl_jax.parts.conservative` (10 sampled actions per kind, temperature 1); with
   ``lagrange=True`` the weight is a learned multiplier that holds the term near
   ``target_action_gap`` (the paper's CQL-Lagrange);
2. the policy step: SAC's actor and temperature step.

Every default's source: ``docs/algorithms.md#cql``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.parts import conservative, sac


@dataclasses.dataclass(frozen=True)
class CQLConfig:
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), actor_lr=1e-4, alpha_lr=1e-4,
                                   backup_entropy=False)
    conservative: conservative.Config = conservative.Config()
    batch_size: int = 256
    cql_weight: float = 5.0
    lagrange: bool = False
    target_action_gap: float = 10.0
    lagrange_lr: float = 3e-4


@flax.struct.dataclass
class CQLState:
    agent: sac.State
    log_alpha_prime: jax.Array
    alpha_prime_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class CQL(Algorithm):
    config: CQLConfig
    name = "cql"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim),
                    lagrange_tx=optax.adam(self.config.lagrange_lr))

    def init(self, key, dataset=None, pretrained=None) -> CQLState:
        log_alpha_prime = jnp.zeros(())
        return CQLState(self.agent.init(key), log_alpha_prime,
                        self.lagrange_tx.init(log_alpha_prime))

    def update(self, state: CQLState, dataset, key):
        config = self.config
        batch_key, critic_key, actor_key = jax.random.split(key, 3)
        batch = sample_batch(dataset, batch_key, config.batch_size)
        # Step 1: the conservative critic step, its weight fixed or the Lagrange multiplier.
        if config.lagrange:
            weight = jnp.clip(jnp.exp(state.log_alpha_prime), 0.0, 1e6) * config.cql_weight
            weight = jax.lax.stop_gradient(weight)
        else:
            weight = config.cql_weight
        agent, penalty, metrics = conservative.critic_step(
            self.agent, state.agent, config.conservative, batch.observations,
            batch.next_observations, batch, batch, critic_key, weight)
        log_alpha_prime, alpha_prime_opt = state.log_alpha_prime, state.alpha_prime_opt
        if config.lagrange:
            # Gradient ascent on alpha' * (penalty - gap): d(-loss)/d log alpha'.
            gap = jax.lax.stop_gradient(penalty.mean() - config.target_action_gap)
            grad = -jnp.exp(log_alpha_prime) * config.cql_weight * gap
            step, alpha_prime_opt = self.lagrange_tx.update(grad, alpha_prime_opt)
            log_alpha_prime = optax.apply_updates(log_alpha_prime, step)
            metrics["alpha_prime"] = jnp.exp(log_alpha_prime)
        # Step 2: the policy step.
        agent, actor_metrics = self.agent.update_actor_and_alpha(agent, batch, actor_key)
        agent = agent.replace(step=agent.step + 1)
        return (state.replace(agent=agent, log_alpha_prime=log_alpha_prime,
                              alpha_prime_opt=alpha_prime_opt), {**metrics, **actor_metrics})

    def act(self, state: CQLState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


ALGORITHM = Registration("cql", CQLConfig, CQL)
