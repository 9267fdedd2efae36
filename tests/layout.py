"""The D4RL layout every generated dataset must have, shared by the generation tests."""

from __future__ import annotations

import numpy as np

from offrl_jax.tasks import ENV_SPECS


def assert_d4rl_layout(data, env: str) -> None:
    """Terminals exactly at falls, never with a time-out; every episode ends in a terminal or a
    time-out and only its last row does; within an episode next_observations[i] ==
    observations[i + 1]."""
    terminals = np.asarray(data.terminals) > 0.5
    timeouts = np.asarray(data.timeouts) > 0.5
    np.testing.assert_array_equal(
        terminals, np.asarray(ENV_SPECS[env].termination_fn(data.next_observations)))
    assert not np.any(terminals & timeouts)
    ids = np.asarray(data.episode_ids)
    last_of_episode = np.append(ids[1:] != ids[:-1], True)
    np.testing.assert_array_equal(last_of_episode, terminals | timeouts)
    same = ~last_of_episode[:-1]
    np.testing.assert_array_equal(np.asarray(data.next_observations)[:-1][same],
                                  np.asarray(data.observations)[1:][same])
