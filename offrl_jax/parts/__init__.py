"""The parts algorithms are built from, each a frozen ``Config``, a state pytree and pure
functions:

- :mod:`~offrl_jax.parts.sac`: the SAC agent (actor, twin critics, temperature);
- :mod:`~offrl_jax.parts.td3`: the TD3 agent (deterministic actor, twin critics, target
  policy smoothing, delayed actor updates), TD3+BC's and ReBRAC's;
- :mod:`~offrl_jax.parts.cloning`: behaviour cloning (BC, and ATAC's and ARMOR's warm start);
- :mod:`~offrl_jax.parts.atac`: ATAC's relatively pessimistic critics against a slow actor
  (ATAC's and ARMOR's critic and actor steps, Bellman error and warm start);
- :mod:`~offrl_jax.parts.sacn`: SAC-N's update of the agent with N clipped critics (SAC-N's and
  EDAC's);
- :mod:`~offrl_jax.parts.conservative`: CQL(H)'s conservative critic term;
- :mod:`~offrl_jax.parts.dynamics`: the dynamics ensemble (or single model), fitted on the data;
- :mod:`~offrl_jax.parts.rollouts`: model rollouts, their ring buffer and mixed minibatches;
- :mod:`~offrl_jax.parts.buffer`: the ring buffer of model transitions, for an algorithm that
  fills its own (ARMOR).

An algorithm's config nests its parts' configs (``MOPOConfig(agent=sac.Config(actor_lr=1e-4),
rollouts=rollouts.Config(horizon=5), ...)``), so a setting is declared once, in its part, and
addressed by path (``--set mopo.rollouts.horizon=1``).
"""


def set_parts(owner, **parts) -> None:
    """Attach the parts a frozen dataclass builds once in ``__post_init__`` (networks,
    optimizers, other parts). They are not fields, so objects of equal fields stay equal and
    hashable (jit caches keyed on them hit)."""
    for name, part in parts.items():
        object.__setattr__(owner, name, part)
