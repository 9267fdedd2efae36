"""The parts algorithms are built from, each a frozen ``Config``, a state pytree and pure
functions:

- :mod:`~offrl_jax.parts.sac`: the SAC agent (actor, twin critics, temperature);
- :mod:`~offrl_jax.parts.td3`: the TD3 agent (deterministic actor, twin critics, target
  policy smoothing, delayed actor updates), TD3+BC's and ReBRAC's;
- :mod:`~offrl_jax.parts.conservative`: CQL(H)'s conservative critic term;
- :mod:`~offrl_jax.parts.dynamics`: the dynamics ensemble (or single model), fitted on the data;
- :mod:`~offrl_jax.parts.rollouts`: model rollouts, their ring buffer and mixed minibatches.

An algorithm's config nests its parts' configs (``MOPOConfig(agent=sac.Config(actor_lr=1e-4),
rollouts=rollouts.Config(horizon=5), ...)``), so a setting is declared once, in its part, and
addressed by path (``--set mopo.rollouts.horizon=1``).
"""
