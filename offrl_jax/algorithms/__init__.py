"""Offline RL algorithms, each a module that reads as its paper's pseudocode.

Every algorithm module provides a frozen config dataclass that nests the configs of the parts it
is built from (:mod:`offrl_jax.parts`), ``init(key, spec, config, dataset)``, a pure
``update(state, dataset, key) -> (state, metrics)`` that samples its own minibatches and
``act(state, obs, key, deterministic)``; model-based ones add ``refresh(state, dataset, key)``
(periodic model rollouts) and share a fitted dynamics model through ``pretrain``. These are
bundled as ``ALGORITHM`` (:class:`~offrl_jax.algorithms.base.Algorithm`); states are pytrees, so
callers can jit, scan and vmap them over seeds. The papers, official code and every default's
source: ``docs/algorithms.md``.
"""
