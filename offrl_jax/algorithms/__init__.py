"""Offline RL algorithms, each a module that reads as its paper's pseudocode.

Every algorithm module provides a frozen config dataclass that nests the configs of the parts it
is built from (:mod:`offrl_jax.parts`), and a class made with ``make(config, spec)`` (an
:class:`~offrl_jax.algorithms.base.Algorithm`) whose ``init(key, dataset)``, ``update(state,
dataset, key) -> (state, metrics)`` (it samples its own minibatches) and ``act(state, obs, key,
deterministic)`` are pure functions of array-only states; model-based ones add ``refresh``
(periodic model rollouts) and share a fitted dynamics model through ``pretrain``. The module's
``ALGORITHM`` (:class:`~offrl_jax.algorithms.base.Registration`) registers it by name. States are
pytrees, so callers can jit, scan and vmap them over seeds. The papers, official code and every
default's source: ``docs/algorithms.md``.
"""
