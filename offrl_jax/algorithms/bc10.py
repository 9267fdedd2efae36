"""10%BC: behaviour cloning on the best 10% of the dataset's episodes, as CORL runs it
(``algorithms/offline/any_percent_bc.py``, the "10% BC" column of its tables).

1. ``init`` ranks the finished episodes by return (``discount`` 1.0: CORL's ``bc_10`` configs;
   the script's own default is 0.99), keeps the best ``floor(top_fraction x episodes)`` of
   them (at least one) and standardises states by the mean and std of the kept rows only;
2. each update samples a minibatch uniformly from the kept rows and fits a deterministic tanh
   actor to their actions by mean squared error.

Episodes are the dataset's ``episode_ids`` (from terminals and timeouts); the last episode is
dropped from the ranking when its last row is neither terminal nor timeout (cut by the data's
size), as CORL drops the rows after its last episode end. CORL ends an episode at a terminal
or after 1000 rows because ``d4rl.qlearning_dataset`` carries no timeouts; the dataset's own
timeouts mark the same ends here.

The selection is jittable (static shapes): the state keeps ``rows (N,)``, the kept rows' indices
first, and ``num_rows``, so the vmapped trainer's compiled init makes it once per seed and no
update goes back to the host. The price is N int32 per seed in the state and its checkpoints.
Every default's source: ``docs/algorithms.md#10bc``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import Dataset
from offrl_jax.networks import DeterministicTanhPolicy, check_init
from offrl_jax.parts import config_repr, quiet_setting
from offrl_jax.parts.td3 import STATE_STD_EPS

# fraction x episodes in float32 lands a hair under an integer for some fractions (0.7 x 10 is
# 6.9999995); CORL's int(frac * n) is float64, where it does not.
_FLOOR_GUARD = 1e-4


@dataclasses.dataclass(frozen=True)
class BC10Config:
    hidden_dims: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    batch_size: int = 256
    top_fraction: float = 0.1
    discount: float = 1.0  # of the returns episodes are ranked by
    normalize_states: bool = True
    # The actor's initialisation scheme (offrl_jax.networks.INITS).
    init: str = quiet_setting("flax")

    __repr__ = config_repr

    def __post_init__(self):
        check_init(self.init)
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], found {self.top_fraction}")


@flax.struct.dataclass
class BC10State:
    actor_params: dict
    opt_state: optax.OptState
    obs_mean: jax.Array  # (obs,), over the kept rows
    obs_std: jax.Array   # (obs,), over the kept rows, + STATE_STD_EPS
    rows: jax.Array      # (N,) int32: the kept rows' indices (in dataset order), then the others
    num_rows: jax.Array  # () int32: how many of ``rows`` are kept
    step: jax.Array


def top_episode_mask(dataset: Dataset, top_fraction: float, discount: float = 1.0):
    """``(N,)`` bool: the rows of the best ``max(1, floor(top_fraction x finished episodes))``
    episodes by discounted return. Pure and jittable (``dataset`` may be traced); ties go to
    the earlier episode."""
    n = dataset.size
    ids = dataset.episode_ids
    index = jnp.arange(n)
    starts = jnp.concatenate([jnp.ones(1, bool), ids[1:] != ids[:-1]])
    episode = jnp.cumsum(starts) - 1                                   # (N,) 0 .. E-1
    start_row = jax.lax.cummax(jnp.where(starts, index, 0))
    weights = jnp.asarray(discount, jnp.float32) ** (index - start_row).astype(jnp.float32)
    returns = jax.ops.segment_sum(dataset.rewards * weights, episode, num_segments=n)
    num_episodes = episode[-1] + 1
    trailing_cut = (dataset.terminals[-1] < 0.5) & (dataset.timeouts[-1] < 0.5)
    num_finished = num_episodes - trailing_cut.astype(num_episodes.dtype)
    ranked = jnp.where(jnp.arange(n) < num_finished, returns, -jnp.inf)
    order = jnp.argsort(-ranked, stable=True)                          # best episode first
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    keep = jnp.maximum(1, jnp.floor(top_fraction * num_finished + _FLOOR_GUARD)).astype(
        jnp.int32)
    return rank[episode] < keep


def sample_rows(dataset: Dataset, rows, num_rows, key, batch_size: int) -> Dataset:
    """``batch_size`` rows drawn uniformly with replacement from the first ``num_rows`` of
    ``rows``; a ``Dataset`` of that size."""
    picks = rows[jax.random.randint(key, (batch_size,), 0, num_rows)]
    return jax.tree.map(lambda field: jnp.take(field, picks, axis=0), dataset)


@dataclasses.dataclass(frozen=True)
class BC10(Algorithm):
    """``BC10(config, spec)``; ``spec`` needs ``obs_dim`` and ``act_dim``."""

    config: BC10Config
    name = "bc10"

    def __post_init__(self):
        self._parts(policy=DeterministicTanhPolicy(self.config.hidden_dims, self.spec.act_dim,
                                                   init_scheme=self.config.init),
                    tx=optax.adam(self.config.learning_rate))

    def init(self, key, dataset, pretrained=None) -> BC10State:
        """Step 1: the kept rows and their state statistics, then a fresh actor."""
        kept = top_episode_mask(dataset, self.config.top_fraction, self.config.discount)
        rows = jnp.argsort(~kept, stable=True).astype(jnp.int32)  # kept rows first
        num_rows = jnp.sum(kept).astype(jnp.int32)
        # CORL's compute_mean_std on the kept rows: numpy's population std + 1e-3.
        weights = kept[:, None].astype(jnp.float32) / num_rows
        mean = jnp.sum(weights * dataset.observations, axis=0)
        std = jnp.sqrt(jnp.sum(weights * (dataset.observations - mean) ** 2, axis=0))
        std = std + STATE_STD_EPS
        if not self.config.normalize_states:
            mean, std = jnp.zeros_like(mean), jnp.ones_like(std)
        params = self.policy.init(key, jnp.zeros((1, self.spec.obs_dim)))
        return BC10State(params, self.tx.init(params), mean, std, rows, num_rows,
                         jnp.zeros((), jnp.int32))

    @staticmethod
    def normalize(state: BC10State, obs):
        return (obs - state.obs_mean) / state.obs_std

    def update(self, state: BC10State, dataset, key):
        """Step 2: one MSE step on a minibatch of the kept rows."""
        batch = sample_rows(dataset, state.rows, state.num_rows, key, self.config.batch_size)
        obs = self.normalize(state, batch.observations)

        def loss_fn(params):
            return jnp.mean((self.policy.apply(params, obs) - batch.actions) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.actor_params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.actor_params)
        params = optax.apply_updates(state.actor_params, updates)
        return (state.replace(actor_params=params, opt_state=opt_state, step=state.step + 1),
                {"action_mse": loss})

    def act(self, state: BC10State, obs, key, deterministic: bool = True):
        """The actor's action for raw observations (normalised here). A deterministic policy:
        ``key`` and ``deterministic`` change nothing."""
        return self.policy.apply(state.actor_params, self.normalize(state, obs))


ALGORITHM = Registration("bc10", BC10Config, BC10)
