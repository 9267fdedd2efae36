"""Offline (and, for the behaviour policies, online) RL algorithms as pure update functions.

Every algorithm module provides a frozen ``Config`` dataclass, ``init(key, spec, config)``,
a pure ``update(state, batch, key) -> (state, metrics)`` and ``act(state, obs, key,
deterministic)``; states are pytrees, so callers can jit, scan and vmap them over seeds.
"""
