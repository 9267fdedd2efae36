"""The ring buffer of model transitions, as algorithms use it directly (ARMOR's D_model of
(s, a) pairs): the part that hands them :mod:`offrl_jax.models.buffer`'s buffer, so they need
not reach into ``models``. Rollouts keep theirs through :mod:`offrl_jax.parts.rollouts`."""

from offrl_jax.models.buffer import ModelBuffer, Transitions, add, init_buffer, sample

__all__ = ["ModelBuffer", "Transitions", "add", "init_buffer", "sample"]
