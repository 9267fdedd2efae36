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

from __future__ import annotations

import dataclasses

# The metadata key of a setting that :func:`config_repr` leaves out while at its default.
_QUIET = "repr_only_when_set"


def quiet_setting(default):
    """A config field that :func:`config_repr` leaves out while it holds ``default``: for a
    setting added after runs were recorded with its default behaviour."""
    return dataclasses.field(default=default, metadata={_QUIET: True})


def config_repr(config) -> str:
    """The dataclass repr of ``config`` without the :func:`quiet_setting` fields that hold their
    default. Checkpoints and finished cells are matched by the repr of their config, so a
    setting added later keeps the repr, and the runs, of every config that leaves it alone; a
    config that sets it has a repr of its own. Assign it as ``__repr__`` in the class body (a
    dataclass subclass needs its own assignment: ``@dataclass`` writes a repr otherwise)."""
    shown = [f"{field.name}={getattr(config, field.name)!r}"
             for field in dataclasses.fields(config)
             if field.repr and not (field.metadata.get(_QUIET)
                                    and getattr(config, field.name) == field.default)]
    return f"{type(config).__qualname__}({', '.join(shown)})"


def set_parts(owner, **parts) -> None:
    """Attach the parts a frozen dataclass builds once in ``__post_init__`` (networks,
    optimizers, other parts). They are not fields, so objects of equal fields stay equal and
    hashable (jit caches keyed on them hit)."""
    for name, part in parts.items():
        object.__setattr__(owner, name, part)
