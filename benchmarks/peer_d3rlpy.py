"""d3rlpy as a measured peer: its implementations trained on the suite's own data, scored the
suite's way, written as the suite's records.

    python -m benchmarks.peer_d3rlpy --task hopper-medium-replay --algos bc td3bc iql \
        --seeds 3 --updates 100000 --eval-every 10000 --eval-episodes 10 \
        --data-profile validate --out results/peer/d3rlpy/hopper-medium-replay

What is the suite's and what is d3rlpy's:

- data: the file ``offrl bench`` trains on for the task (``offrl_jax.data.find_task_dataset``
  with the generated file of ``--data-profile``, ``$OFFRL_DATA_DIR`` honoured), read by the
  suite's reader; a missing file is the suite's own error (nothing is generated here). Its rows
  become a d3rlpy ``MDPDataset`` whose transitions are exactly those rows
  (:func:`mdp_arrays`);
- settings: each algorithm's config as ``offrl bench --profile PROFILE`` resolves it for the
  task (the profile's overrides and the task's table applied), mapped onto d3rlpy's config
  (:data:`MAPPINGS`); d3rlpy's defaults stand where the suite has no such setting, and what
  d3rlpy cannot express is listed as ``not_matched`` in ``OUT/config.json``;
- training: d3rlpy's own update (``algo.update`` on ``sample_transition_batch``), seeded with
  ``d3rlpy.seed(seed)``, ``updates`` steps per seed in intervals of ``eval_every``;
- evaluation: the suite's protocol (:mod:`offrl_jax.evaluation`): the host Gymnasium
  environments, the reset seeds and evaluation keys of an ``offrl bench`` run of the same seeds
  (:func:`episode_seeds`), greedy actions (d3rlpy's ``predict``), the suite's normalized score,
  one record per (seed, evaluation) with the suite's fields (the algorithm named
  ``d3rlpy-ALGO``).

``OUT`` holds ``records/d3rlpy-ALGO__TASK.jsonl`` and ``logs/`` (as ``offrl bench`` writes
them, so ``offrl report`` reads and merges them), ``config.json`` (every setting, the suite's
config it came from, d3rlpy's and torch's versions) and ``run.json`` (commit, data path and
sha256, versions, device, times, updates per second of training alone). A seed whose records
reach the last update is finished: a rerun into the same ``OUT`` skips it and trains the others
from their start.

d3rlpy and torch are an optional extra (``pip install -e ".[peer]"``); the suite never needs
them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np

from offrl_jax.algorithms.base import config_paths
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset, episode_returns, find_task_dataset, load_task_dataset
from offrl_jax.envs.host import HostVectorEnv
from offrl_jax.evaluation import EvalResult
from offrl_jax.files import read_json_object, timestamp, write_text_atomic
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.parts.td3 import STATE_STD_EPS
from offrl_jax.results.provenance import device_description, library_versions, process_commit
from offrl_jax.results.records import records_path, write_records, write_scalar_logs
from offrl_jax.tasks import Task, get_env_spec, normalized_score, parse_task_argument
from offrl_jax.training.loop import TrainConfig, _scored
from offrl_jax.training.plan import config_overrides
from offrl_jax.training.profiles import RUN_PROFILES
from offrl_jax.training.runner import ensure_dataset

INSTALL_HINT = 'pip install -e ".[peer]"'
RECORD_PREFIX = "d3rlpy-"
CONFIG_FORMAT = 1


class PeerError(ValueError):
    """A choice this driver cannot run: an algorithm d3rlpy lacks, an unknown task, a schedule
    that does not divide, an output directory of another run."""


# Every difference the mapping cannot remove, for every algorithm.
COMMON_NOT_MATCHED = (
    "network initialisation: torch's defaults (the suite: flax's)",
    "minibatches: drawn uniformly with replacement by numpy's generator, seeded by "
    "d3rlpy.seed(seed) (the suite: by JAX keys from the seed): the same distribution, other "
    "draws",
)


# --- Settings: the suite's config, as d3rlpy's -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Encoder:
    """A d3rlpy ``VectorEncoderFactory``: ReLU hidden layers, a LayerNorm after each with
    ``layer_norm``."""

    hidden_units: tuple[int, ...]
    layer_norm: bool = False


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the settings take from the data: IQL's reward scale ``1000 / (max - min episode
    return)`` (the suite's ``iql.episode_return_range``, over its episodes)."""

    reward_scale: float

    @classmethod
    def of(cls, dataset: Dataset) -> DataFacts:
        returns = episode_returns(dataset)
        return cls(reward_scale=1000.0 / max(float(np.ptp(returns)), 1e-6))


@dataclasses.dataclass(frozen=True)
class PeerSettings:
    """One algorithm's d3rlpy settings, as plain values (JSON-able, testable without d3rlpy).

    ``config``: the class in ``d3rlpy.algos``; ``values``: its keyword arguments; ``encoders``:
    keyword -> :class:`Encoder`; ``standardize_observations``: a ``StandardObservationScaler``
    with the dataset's per-dimension mean and std and ``eps = STATE_STD_EPS`` (the suite's
    ``(obs - mean) / (std + 1e-3)``); ``reward_multiplier``: a ``MultiplyRewardScaler``;
    ``actor_cosine_steps``: the actor's Adam under a cosine schedule to zero over that many
    steps; ``not_matched``: what d3rlpy cannot express."""

    algorithm: str
    config: str
    values: Mapping[str, Any]
    encoders: Mapping[str, Encoder]
    standardize_observations: bool = False
    reward_multiplier: float | None = None
    actor_cosine_steps: int | None = None
    not_matched: tuple[str, ...] = ()

    @property
    def record_name(self) -> str:
        return RECORD_PREFIX + self.algorithm

    def describe(self) -> dict:
        """The settings as JSON values (``config.json``'s ``d3rlpy`` entry)."""
        return json.loads(json.dumps({
            "config": self.config, "values": dict(self.values),
            "encoders": {k: dataclasses.asdict(v) for k, v in self.encoders.items()},
            "observation_scaler": ({"kind": "standard", "from": "dataset observations",
                                    "eps": STATE_STD_EPS}
                                   if self.standardize_observations else None),
            "reward_scaler": (None if self.reward_multiplier is None else
                              {"kind": "multiply", "multiplier": self.reward_multiplier}),
            "actor_lr_schedule": (None if self.actor_cosine_steps is None else
                                  {"kind": "cosine", "T_max": self.actor_cosine_steps,
                                   "eta_min": 0.0}),
            "not_matched": [*self.not_matched, *COMMON_NOT_MATCHED]}))


def _bc(config, facts: DataFacts) -> PeerSettings:
    return PeerSettings(
        "bc", "BCConfig",
        {"batch_size": config.batch_size, "learning_rate": config.learning_rate,
         "policy_type": "deterministic"},
        {"encoder_factory": Encoder(tuple(config.hidden_dims))},
        not_matched=(
            "loss: the suite fits a tanh-Gaussian policy by maximum likelihood and acts with "
            "tanh(mean); d3rlpy's BC regresses a deterministic tanh policy by mean squared "
            "error (its 'stochastic' policy type regresses a sampled action, not maximum "
            "likelihood either)",))


def _td3_values(td3, batch_size: int) -> dict:
    """The TD3 agent's settings under d3rlpy's names (TD3+BC and ReBRAC)."""
    return {"batch_size": batch_size, "actor_learning_rate": td3.actor_lr,
            "critic_learning_rate": td3.critic_lr, "gamma": td3.gamma, "tau": td3.tau,
            "n_critics": td3.num_qs, "target_smoothing_sigma": td3.policy_noise,
            "target_smoothing_clip": td3.noise_clip, "update_actor_interval": td3.policy_freq}


def _td3_encoders(td3) -> dict[str, Encoder]:
    return {"actor_encoder_factory": Encoder(tuple(td3.hidden_dims), td3.actor_layer_norm),
            "critic_encoder_factory": Encoder(tuple(td3.hidden_dims), td3.critic_layer_norm)}


def _td3bc(config, facts: DataFacts) -> PeerSettings:
    return PeerSettings(
        "td3bc", "TD3PlusBCConfig", {**_td3_values(config.td3, config.batch_size),
                                     "alpha": config.alpha},
        _td3_encoders(config.td3), standardize_observations=config.normalize_states)


def _iql(config, facts: DataFacts) -> PeerSettings:
    not_matched = [
        "step order: d3rlpy updates V and the critics in one step (the critics' target uses V "
        "before that step; the suite's uses V after it) and then the actor, whose weights use "
        "the updated V (the suite's: V before its step)"]
    if config.value_lr != config.critic_lr:
        not_matched.append(f"value_lr: d3rlpy trains V with the critics' optimizer, at "
                           f"critic_lr {config.critic_lr} (the suite's value_lr: "
                           f"{config.value_lr})")
    if config.policy != "gaussian":
        not_matched.append(f"policy: d3rlpy's IQL has only the Gaussian policy (the suite's: "
                           f"{config.policy!r})")
    encoder = Encoder(tuple(config.hidden_dims))
    return PeerSettings(
        "iql", "IQLConfig",
        {"batch_size": config.batch_size, "actor_learning_rate": config.actor_lr,
         "critic_learning_rate": config.critic_lr, "gamma": config.gamma, "tau": config.tau,
         "n_critics": 2, "expectile": config.expectile, "weight_temp": config.temperature,
         "max_weight": config.max_weight},
        {"actor_encoder_factory": encoder, "critic_encoder_factory": encoder,
         "value_encoder_factory": encoder},
        reward_multiplier=facts.reward_scale if config.normalize_rewards else None,
        actor_cosine_steps=config.total_updates, not_matched=tuple(not_matched))


def _cql(config, facts: DataFacts) -> PeerSettings:
    agent = config.agent
    not_matched = []
    if agent.target_entropy is not None:
        not_matched.append(f"agent.target_entropy: d3rlpy's is -act_dim (the suite's: "
                           f"{agent.target_entropy})")
    if config.conservative.temperature != 1.0:
        not_matched.append(f"conservative.temperature: d3rlpy's is 1 (the suite's: "
                           f"{config.conservative.temperature})")
    not_matched.append("policy log-std: d3rlpy's CQL clips it to [-20, 2] (the suite's: "
                       "[-5, 2])")
    encoder = Encoder(tuple(agent.hidden_dims))
    # d3rlpy scales the conservative term by a multiplier alpha times conservative_weight; a
    # zero alpha rate keeps alpha at initial_alpha = 1: the suite's fixed cql_weight. Its
    # alpha_threshold then shifts the loss by a constant only.
    return PeerSettings(
        "cql", "CQLConfig",
        {"batch_size": config.batch_size, "actor_learning_rate": agent.actor_lr,
         "critic_learning_rate": agent.critic_lr, "temp_learning_rate": agent.alpha_lr,
         "alpha_learning_rate": config.lagrange_lr if config.lagrange else 0.0,
         "gamma": agent.gamma, "tau": agent.tau, "n_critics": agent.num_qs,
         "initial_temperature": agent.init_alpha, "initial_alpha": 1.0,
         "alpha_threshold": config.target_action_gap,
         "conservative_weight": config.cql_weight,
         "n_action_samples": config.conservative.num_samples,
         "soft_q_backup": agent.backup_entropy, "max_q_backup": False},
        {"actor_encoder_factory": encoder, "critic_encoder_factory": encoder},
        not_matched=tuple(not_matched))


def _rebrac(config, facts: DataFacts) -> PeerSettings:
    not_matched = [
        "critic penalty at the last row of an episode cut by the time limit or by the end of "
        "the data: the suite adds none (no next action in the data); d3rlpy penalises the "
        "distance to a placeholder next action (that row's own action)"]
    if not config.normalize_q:
        not_matched.append("normalize_q: d3rlpy always divides the actor's Q term by "
                           "mean|Q| (the suite's: off)")
    return PeerSettings(
        "rebrac", "ReBRACConfig", {**_td3_values(config.td3, config.batch_size),
                                   "actor_beta": config.actor_beta,
                                   "critic_beta": config.critic_beta},
        _td3_encoders(config.td3), standardize_observations=config.normalize_states,
        not_matched=tuple(not_matched))


# The suite's algorithms that d3rlpy implements: name -> mapping of the suite's config.
MAPPINGS: dict[str, Callable[[Any, DataFacts], PeerSettings]] = {
    "bc": _bc, "td3bc": _td3bc, "iql": _iql, "cql": _cql, "rebrac": _rebrac}


def suite_config(algorithm: str, task: str, profile: str, train: TrainConfig):
    """The algorithm's config as ``offrl bench --profile PROFILE`` resolves it for ``task``
    (the profile's overrides, the task's table, ``total_updates`` following the run)."""
    registration = get_algorithm(algorithm)
    overrides = config_overrides(registration, RUN_PROFILES[profile], train, {})
    return registration.make_config(task, overrides)


def peer_settings(algorithm: str, config, facts: DataFacts) -> PeerSettings:
    if algorithm not in MAPPINGS:
        raise PeerError(f"--algos {algorithm}: d3rlpy has no counterpart in this driver; "
                         f"choose among {', '.join(MAPPINGS)}")
    return MAPPINGS[algorithm](config, facts)


# --- Data: the suite's rows as d3rlpy episodes ----------------------------------------------------

def mdp_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    """``observations (M, obs)``, ``actions (M, act)``, ``rewards (M,)``, ``terminals (M,)``,
    ``timeouts (M,)`` for ``d3rlpy.dataset.MDPDataset``, and ``rows (M,)``: the dataset row of
    each (-1 for an added row). M = N + the episodes that do not end in a terminal.

    Episodes are the suite's (``episode_ids``: ends at terminals, timeouts and unflagged
    discontinuities). d3rlpy reads an episode of T rows as T transitions when it ends in a
    terminal and T - 1 otherwise (the last row has no next observation), taking each next
    observation from the following row. So an episode that does not end in a terminal gets one
    added row after its last: its observation is that row's ``next_observations``, its action
    that row's (a placeholder no transition uses as its own), reward 0, flagged timeout. Every
    dataset row is then exactly one d3rlpy transition, with the file's next observation.
    Raises ValueError where the suite's data could not be one (a terminal inside an episode, a
    next observation unlike the following row of the same episode).
    """
    data = dataset.to_numpy()
    ids = data["episode_ids"]
    n = ids.shape[0]
    ends = np.r_[ids[1:] != ids[:-1], True]
    terminal = data["terminals"] > 0.5
    if np.any(terminal & ~ends):
        raise ValueError(f"dataset: key 'terminals': expected terminals at episode ends only, "
                         f"found {int(np.sum(terminal & ~ends))} inside episodes")
    inner = np.flatnonzero(~ends)
    same = np.isclose(data["next_observations"][inner], data["observations"][inner + 1],
                      rtol=1e-5, atol=1e-6).all(axis=1)
    if not same.all():
        raise ValueError(f"dataset: key 'next_observations': expected the following row's "
                         f"observation inside an episode, found {int(np.sum(~same))} rows "
                         f"unlike it")
    open_end = ends & ~terminal
    # Row i moves down by the number of rows added before it.
    position = np.arange(n) + np.cumsum(open_end) - open_end
    added = position[open_end] + 1
    size = n + int(open_end.sum())
    out = {
        "observations": np.zeros((size, data["observations"].shape[1]), np.float32),
        "actions": np.zeros((size, data["actions"].shape[1]), np.float32),
        "rewards": np.zeros(size, np.float32),
        "terminals": np.zeros(size, np.float32),
        "timeouts": np.zeros(size, np.float32),
        "rows": np.full(size, -1, np.int64),
    }
    out["observations"][position] = data["observations"]
    out["observations"][added] = data["next_observations"][open_end]
    out["actions"][position] = data["actions"]
    out["actions"][added] = data["actions"][open_end]
    out["rewards"][position] = data["rewards"]
    out["terminals"][position[terminal]] = 1.0
    out["timeouts"][added] = 1.0
    out["rows"][position] = np.arange(n)
    return out


def observation_moments(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std ``(obs,)`` of the dataset's observations (the suite's
    ``td3.state_moments`` before its ``+ STATE_STD_EPS``, which d3rlpy's scaler adds)."""
    observations = np.asarray(dataset.observations, np.float64)
    return observations.mean(0), observations.std(0)


# --- Evaluation: the suite's protocol ------------------------------------------------------------

def episode_seeds(seeds: Sequence[int], interval: int, num_episodes: int) -> np.ndarray:
    """``(len(seeds), num_episodes)`` Gymnasium reset seeds of evaluation ``interval`` (0 for
    the first) in an ``offrl bench`` run of ``seeds``: the key of ``Trainer._evaluate`` and the
    reset seeds the host ``Evaluator`` draws from it (one group of rows). Row i is seed
    ``seeds[i]``'s."""
    eval_key = jax.random.fold_in(jax.random.PRNGKey(seeds[0]), 10_000 + interval)
    reset_key, _ = jax.random.split(eval_key)
    drawn = jax.random.randint(reset_key, (len(seeds) * num_episodes,), 0, 2**31 - 1)
    return np.asarray(drawn).reshape(len(seeds), num_episodes)


class HostEpisodes:
    """The host ``Evaluator``'s episodes for one policy given as ``act(obs (E, obs)) ->
    actions (E, act)`` (greedy): each of the environments reset with its seed, stepped until
    it terminates or reaches ``max_steps`` (default the environment's episode length), never
    reset again. ``__call__(act, reset_seeds (E,)) -> EvalResult`` of one row."""

    def __init__(self, env: str, max_steps: int | None = None):
        self.spec = get_env_spec(env)
        self.max_steps = max_steps or self.spec.episode_length
        self._envs: HostVectorEnv | None = None

    def __call__(self, act: Callable[[np.ndarray], np.ndarray], reset_seeds) -> EvalResult:
        reset_seeds = np.asarray(reset_seeds).reshape(-1)
        num_envs = reset_seeds.shape[0]
        if self._envs is None or self._envs.num_envs != num_envs:
            self._envs = HostVectorEnv(self.spec.name, num_envs)
        obs = self._envs.reset(reset_seeds)
        returns = np.zeros(num_envs)
        lengths = np.zeros(num_envs, np.int32)
        active = np.ones(num_envs, bool)
        for _ in range(self.max_steps):
            actions = np.asarray(act(obs.astype(np.float32)))
            obs, rewards, terminated, truncated = self._envs.step(
                actions.reshape(num_envs, -1), active)
            returns += np.where(active, rewards, 0.0)
            lengths += active
            active &= ~(terminated | truncated)
            if not active.any():
                break
        return EvalResult(returns[None], lengths[None],
                          normalized_score(self.spec.name, returns)[None], reset_seeds[None])


def suite_evaluation(episodes: HostEpisodes, seeds: Sequence[int], num_episodes: int
                     ) -> Callable[[Callable, int, int], EvalResult]:
    """``evaluate(act, seed index, interval)``: ``seeds[index]``'s episodes of evaluation
    ``interval`` in an ``offrl bench`` run of ``seeds`` (:func:`episode_seeds`)."""
    def evaluate(act, index: int, interval: int) -> EvalResult:
        return episodes(act, episode_seeds(seeds, interval, num_episodes)[index])

    return evaluate


# --- Training: one seed at a time, resumable per seed --------------------------------------------

class Agent(Protocol):
    """One seed's learner: ``update()`` runs one gradient step on a fresh minibatch and returns
    its metrics; ``act(obs (E, obs)) -> (E, act)`` the greedy actions."""

    def update(self) -> Mapping[str, float]: ...

    def act(self, observations: np.ndarray) -> np.ndarray: ...


MakeAgent = Callable[[PeerSettings, int], Agent]
Evaluate = Callable[[Callable[[np.ndarray], np.ndarray], int, int], EvalResult]


def finished_seeds(records: list[dict], train: TrainConfig) -> set[int]:
    """The seeds whose records hold every evaluation of ``train`` (its schedule's steps)."""
    steps = set(range(train.eval_every, train.num_updates + 1, train.eval_every))
    found: dict[int, set[int]] = {}
    for record in records:
        found.setdefault(record["seed"], set()).add(record["step"])
    return {seed for seed, done in found.items() if steps <= done}


def read_records(path: Path) -> list[dict]:
    """A records file's lines without ``algorithm`` and ``task`` (as ``write_records`` takes
    them); none for a missing file."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if k not in ("algorithm", "task")} for r in lines]


def _finite(metrics: Mapping[str, float]) -> bool:
    return all(math.isfinite(float(v)) for v in metrics.values())


def train_seed(agent: Agent, train: TrainConfig, seed: int,
               evaluate: Callable[[Callable, int], EvalResult],
               on_evaluation: Callable[[dict, float], None]) -> float:
    """Train ``agent`` for ``train.num_updates`` steps, evaluating after every
    ``train.eval_every``; each evaluation's record (the suite's fields) goes to
    ``on_evaluation(record, training seconds so far)``. Returns the training seconds
    (evaluation excluded). A seed whose metrics turned non-finite is flagged ``failed`` from
    then on (d3rlpy keeps training it; the suite freezes it)."""
    seconds, failed = 0.0, False
    for interval in range(train.num_updates // train.eval_every):
        start = time.perf_counter()
        sums: dict[str, float] = {}
        for _ in range(train.eval_every):
            metrics = agent.update()
            failed = failed or not _finite(metrics)
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        seconds += time.perf_counter() - start
        result = evaluate(agent.act, interval)
        record = {"seed": seed, "step": (interval + 1) * train.eval_every, "failed": failed,
                  **_scored(result, 0),
                  "metrics": {k: v / train.eval_every for k, v in sums.items()}}
        on_evaluation(record, seconds)
    return seconds


def train_algorithm(settings: PeerSettings, train: TrainConfig, seeds: Sequence[int],
                    out_dir: Path, task: str, make_agent: MakeAgent, evaluate: Evaluate,
                    on_seed: Callable[[int, dict], None] | None = None,
                    log: Callable[[str], None] = print) -> None:
    """Every unfinished seed of one algorithm, one after another, from its start.

    ``evaluate(act, seed index, interval)`` scores a policy; ``on_seed(seed, timing)`` gets
    each trained seed's ``updates``, ``train_seconds`` and ``updates_per_second``. The records
    (``records/d3rlpy-ALGO__TASK.jsonl`` and ``logs/``) are rewritten atomically after every
    evaluation: the finished seeds' and the one in training so far; an unfinished seed's
    records of an earlier call are dropped and replaced as it trains again."""
    name = settings.record_name
    earlier = read_records(records_path(out_dir, name, task))
    done = finished_seeds(earlier, train)
    kept = [r for r in earlier if r["seed"] in done and r["seed"] in seeds]  # grows
    intervals = train.num_updates // train.eval_every

    def write(records):
        ordered = sorted(records, key=lambda r: (r["step"], seeds.index(r["seed"])))
        write_records(out_dir, name, task, ordered)
        write_scalar_logs(out_dir, name, task, ordered)

    for index, seed in enumerate(seeds):
        if seed in done:
            log(f"{name} seed {seed}: finished (records to update {train.num_updates}), "
                f"not retrained")
            continue
        agent = make_agent(settings, seed)
        current: list[dict] = []

        def on_evaluation(record, seconds, seed=seed, current=current):
            current.append(record)
            write(kept + current)
            rate = record["step"] / max(seconds, 1e-9)
            left = (train.num_updates - record["step"]) / max(rate, 1e-9)
            score = ("no score (non-finite)" if record["normalized_score"] is None
                     else f"score {record['normalized_score']:.1f}")
            log(f"{name} seed {seed}: eval {len(current)}/{intervals} at update "
                f"{record['step']}, {score}{' FAILED' if record['failed'] else ''}, "
                f"{rate:.0f} updates/s (training only), ~{left / 60:.1f} min of training left")

        seconds = train_seed(agent, train, seed,
                             lambda act, interval, index=index: evaluate(act, index, interval),
                             on_evaluation)
        kept.extend(current)
        if on_seed is not None:
            on_seed(seed, {"updates": train.num_updates, "train_seconds": round(seconds, 2),
                           "updates_per_second": round(train.num_updates / max(seconds, 1e-9),
                                                       1)})


# --- d3rlpy (imported only here) -----------------------------------------------------------------

class PeerUnavailable(RuntimeError):
    """d3rlpy or torch is not installed."""


def require_d3rlpy():
    """``(d3rlpy, torch)``, or :class:`PeerUnavailable` saying how to install them."""
    try:
        import d3rlpy
        import torch
    except ImportError as error:
        raise PeerUnavailable(f"the d3rlpy peer needs d3rlpy and torch ({error.name} is "
                              f"missing): {INSTALL_HINT}") from None
    import logging

    import structlog

    # d3rlpy reports through structlog at info level (datasets' signatures and the like);
    # the progress lines here are this driver's.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy, torch


def make_mdp_dataset(dataset: Dataset):
    """The d3rlpy ``MDPDataset`` of :func:`mdp_arrays`."""
    d3rlpy, _ = require_d3rlpy()
    arrays = mdp_arrays(dataset)
    return d3rlpy.dataset.MDPDataset(
        observations=arrays["observations"], actions=arrays["actions"],
        rewards=arrays["rewards"], terminals=arrays["terminals"], timeouts=arrays["timeouts"],
        action_space=d3rlpy.ActionSpace.CONTINUOUS)


def d3rlpy_config(settings: PeerSettings, observation_mean: np.ndarray,
                  observation_std: np.ndarray):
    """The d3rlpy config object of ``settings`` (the moments: :func:`observation_moments`)."""
    d3rlpy, _ = require_d3rlpy()
    from d3rlpy.models.encoders import VectorEncoderFactory

    kwargs = dict(settings.values)
    for keyword, encoder in settings.encoders.items():
        kwargs[keyword] = VectorEncoderFactory(hidden_units=list(encoder.hidden_units),
                                               use_layer_norm=encoder.layer_norm)
    if settings.standardize_observations:
        kwargs["observation_scaler"] = d3rlpy.preprocessing.StandardObservationScaler(
            mean=observation_mean, std=observation_std, eps=STATE_STD_EPS)
    if settings.reward_multiplier is not None:
        kwargs["reward_scaler"] = d3rlpy.preprocessing.MultiplyRewardScaler(
            multiplier=settings.reward_multiplier)
    if settings.actor_cosine_steps is not None:
        kwargs["actor_optim_factory"] = d3rlpy.optimizers.AdamFactory(
            lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(
                T_max=settings.actor_cosine_steps))
    return getattr(d3rlpy.algos, settings.config)(**kwargs)


class D3rlpyAgent:
    """One seed of a d3rlpy algorithm on a d3rlpy dataset (:class:`Agent`)."""

    def __init__(self, config, buffer, seed: int, device: str):
        d3rlpy, _ = require_d3rlpy()
        d3rlpy.seed(seed)
        self.algo = config.create(device=device)
        self.algo.build_with_dataset(buffer)
        self.buffer, self.batch_size = buffer, config.batch_size

    def update(self) -> Mapping[str, float]:
        return self.algo.update(self.buffer.sample_transition_batch(self.batch_size))

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.algo.predict(observations)


def torch_device(choice: str) -> str:
    _, torch = require_d3rlpy()
    if choice == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu:0"
    return choice


def describe_device(device: str) -> str:
    """``gpu (NVIDIA H100 ...)`` or the CPU's model, as ``run.json`` names devices."""
    _, torch = require_d3rlpy()
    if device.startswith("cuda"):
        return f"gpu ({torch.cuda.get_device_name(torch.device(device))})"
    if jax.default_backend() == "cpu":
        return device_description()
    return f"cpu ({platform.processor() or platform.machine()})"


# --- The run's files -----------------------------------------------------------------------------

def check_same_run(path: Path, previous: dict, document: dict) -> None:
    """Raise :class:`PeerError` unless ``document`` (this call's ``config.json``) may continue
    the run ``previous`` describes: the same task, data profile and seeds (the seeds decide
    every evaluation's episodes), and for each algorithm both ran, the same schedule and
    settings."""
    for key in ("task", "data_profile", "seeds"):
        if key in previous and previous[key] != document[key]:
            raise PeerError(f"{path}: key {key!r}: expected {previous[key]!r} (this output "
                             f"directory's run), found {document[key]!r}; use another "
                             f"output directory")
    for algorithm, entry in document["algorithms"].items():
        before = previous.get("algorithms", {}).get(algorithm)
        if before is None:
            continue
        for key in ("train", "d3rlpy"):
            if before.get(key) != entry[key]:
                raise PeerError(f"{path}: key 'algorithms.{algorithm}.{key}': expected "
                                 f"{before.get(key)}, found {entry[key]}; this output "
                                 f"directory's {algorithm} ran other settings: use another "
                                 f"output directory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peer_d3rlpy",
        description="Train d3rlpy's implementations on the suite's data, scored the suite's "
                    "way, into the suite's record format.")
    parser.add_argument("--task", required=True, help="a task name, as offrl bench --tasks")
    parser.add_argument("--algos", nargs="+", default=["bc", "td3bc", "iql"],
                        help=f"the suite's algorithm names, among {', '.join(MAPPINGS)}")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (0..N-1); default: the profile's")
    parser.add_argument("--profile", default="validate", choices=sorted(RUN_PROFILES),
                        help="the offrl bench profile whose settings (and, without the flags "
                             "below, schedule) are matched (default: validate)")
    parser.add_argument("--updates", type=int, default=None,
                        help="gradient steps per seed (default: the profile's per algorithm)")
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--eval-episodes", type=int, default=None)
    parser.add_argument("--data-profile", default=None,
                        help="the generated data's profile (default: the profile's)")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda:0 when available, else cpu:0), cpu:0, "
                             "cuda:0")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads (default: torch's own choice); on a CPU shared "
                             "with other jobs, 1 avoids threads waiting on each other")
    parser.add_argument("--out", default=None,
                        help="output directory (default: results/peer/d3rlpy/TASK)")
    return parser.parse_args(argv)


def schedules(args, algorithms: list[str]) -> dict[str, TrainConfig]:
    """Each algorithm's schedule: the profile's, then ``--updates``, ``--eval-every``,
    ``--eval-episodes``. The host backend always (the reference environments)."""
    profile = RUN_PROFILES[args.profile]
    flags = {"num_updates": args.updates, "eval_every": args.eval_every,
             "eval_episodes": args.eval_episodes}
    chosen = {k: v for k, v in flags.items() if v is not None}
    out = {}
    for algorithm in algorithms:
        try:
            out[algorithm] = dataclasses.replace(profile.train_for(algorithm), **chosen,
                                                 eval_backend="host")
        except ValueError as error:
            raise PeerError(f"{algorithm}: {error} (--updates, --eval-every)") from None
    return out


def run(args: argparse.Namespace, argv: list[str]) -> None:
    unknown = [a for a in args.algos if a not in MAPPINGS]
    if unknown:
        raise PeerError(f"--algos {' '.join(unknown)}: d3rlpy has no counterpart in this "
                        f"driver; choose among {', '.join(MAPPINGS)}")
    try:
        task: Task = parse_task_argument(args.task)
    except (KeyError, ValueError) as error:
        raise PeerError(f"--task {args.task}: {error.args[0] if error.args else error}") from None
    data_profile = args.data_profile or RUN_PROFILES[args.profile].data_profile
    seeds = list(range(RUN_PROFILES[args.profile].default_seeds if args.seeds is None
                       else args.seeds))
    trains = schedules(args, args.algos)
    out_dir = Path(args.out or Path("results/peer/d3rlpy") / task.name)

    generated = task_generated_file(task, data_profile)
    find_task_dataset(task, generated)  # the suite's message when there is no file
    d3rlpy, torch = require_d3rlpy()
    data_info = ensure_dataset(task, data_profile, progress=False)
    dataset = load_task_dataset(task, generated)
    facts = DataFacts.of(dataset)
    mean, std = observation_moments(dataset)
    device = torch_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    suite = {a: suite_config(a, task.name, args.profile, trains[a]) for a in args.algos}
    settings = {a: peer_settings(a, suite[a], facts) for a in args.algos}
    configs = {a: d3rlpy_config(settings[a], mean, std) for a in args.algos}
    versions = {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__,
                "python": platform.python_version()}
    document = {
        "format": CONFIG_FORMAT, "peer": "d3rlpy", "task": task.name, "profile": args.profile,
        "data_profile": data_profile, "seeds": seeds, "versions": versions,
        "algorithms": {a: {
            "record_name": settings[a].record_name,
            "train": dataclasses.asdict(trains[a]),
            "d3rlpy": settings[a].describe(),
            "d3rlpy_config": json.loads(configs[a].serialize()),
            "suite_settings": json.loads(json.dumps(config_paths(suite[a]))),
        } for a in args.algos},
    }
    config_path = out_dir / "config.json"
    previous_config = read_json_object(config_path)
    check_same_run(config_path, previous_config, document)
    merged_algorithms = {**previous_config.get("algorithms", {}), **document["algorithms"]}
    write_text_atomic(config_path, json.dumps({**document, "algorithms": merged_algorithms},
                                              indent=2) + "\n")

    run_path = out_dir / "run.json"
    book = read_json_object(run_path)
    commit, dirty = process_commit()
    started = timestamp()
    book.update({
        "peer": "d3rlpy", "profile": f"{args.profile} (d3rlpy peer)", "argv": argv,
        "commit": commit, "code_modified_since_commit": dirty,
        "versions": {**library_versions(), **versions},
        "python": platform.python_version(), "host": platform.node(),
        "device": describe_device(device), "device_count": 1, "torch_device": device,
        "torch_threads": torch.get_num_threads(),
        "algorithms": sorted({*book.get("algorithms", []),
                              *(s.record_name for s in settings.values())}),
        "tasks": [task.name], "seeds": seeds,
        "train": {**book.get("train", {}),
                  **{settings[a].record_name: dataclasses.asdict(trains[a])
                     for a in args.algos}},
        "data": {task.name: data_info},
        "started": book.get("started", started), "this_invocation_started": started,
        "finished": None,
    })
    book.setdefault("training", {})
    write_text_atomic(run_path, json.dumps(book, indent=2))
    print(f"d3rlpy {d3rlpy.__version__} (torch {torch.__version__}, {device}) on "
          f"{task.name}: {data_info['path']} ({dataset.size:,} rows), seeds {seeds}", flush=True)

    buffer = make_mdp_dataset(dataset)
    episodes = HostEpisodes(task.spec.name)


    def make_agent(peer: PeerSettings, seed: int) -> Agent:
        return D3rlpyAgent(configs[peer.algorithm], buffer, seed, device)

    for algorithm in args.algos:
        name = settings[algorithm].record_name
        timing = book["training"].setdefault(name, {"seeds": {}})

        def on_seed(seed, info, timing=timing):
            timing["seeds"][str(seed)] = {**info, "finished": timestamp()}
            rates = [s["updates_per_second"] for s in timing["seeds"].values()]
            timing["updates_per_second"] = round(float(np.mean(rates)), 1)
            write_text_atomic(run_path, json.dumps(book, indent=2))

        print(f"{name}: {trains[algorithm].num_updates:,} updates per seed, evaluated every "
              f"{trains[algorithm].eval_every:,} on {trains[algorithm].eval_episodes} episodes",
              flush=True)
        evaluate = suite_evaluation(episodes, seeds, trains[algorithm].eval_episodes)
        train_algorithm(settings[algorithm], trains[algorithm], seeds, out_dir, task.name,
                        make_agent, evaluate, on_seed,
                        log=lambda line: print(line, flush=True))
    book["finished"] = timestamp()
    write_text_atomic(run_path, json.dumps(book, indent=2))
    rates = ", ".join(f"{name} {info.get('updates_per_second')}"
                      for name, info in book["training"].items())
    print(f"results: {out_dir / 'records'} (updates/s, training only: {rates})", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        run(args, argv)
    except (PeerUnavailable, PeerError, FileNotFoundError) as error:
        print(f"peer_d3rlpy: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
