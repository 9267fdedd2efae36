"""Run profiles: the named budgets of ``offrl bench --profile`` (``tiny``, ``quick``,
``validate``, ``full``), each a training schedule, the data profile its generated data comes
from, default tasks and seeds, and per-algorithm overrides of configs and schedules.

A run profile is data: :func:`offrl_jax.training.plan.plan_run` resolves it, with the task
tables and ``--set`` overrides, into every (algorithm, task)'s config and schedule.
"""

from __future__ import annotations

import dataclasses

from offrl_jax.training.loop import TrainConfig


@dataclasses.dataclass(frozen=True)
class RunProfile:
    """One run profile: ``train`` (every algorithm's schedule), ``data_profile`` (the
    :data:`~offrl_jax.generation.data_profiles.DATA_PROFILES` entry a built-in task's
    generated data comes from), the tasks and number of seeds run when none are given."""

    name: str
    train: TrainConfig
    data_profile: str
    default_tasks: tuple[str, ...]
    default_seeds: int
    # Per-algorithm config overrides of this profile (e.g. smaller networks for tests), and
    # per-algorithm TrainConfig fields (e.g. fewer updates for the costly ones on a CPU).
    algorithm_overrides: dict = dataclasses.field(default_factory=dict)
    train_overrides: dict = dataclasses.field(default_factory=dict)
    # None: every registered algorithm.
    default_algorithms: tuple[str, ...] | None = None

    def train_for(self, algorithm: str) -> TrainConfig:
        return dataclasses.replace(self.train, **self.train_overrides.get(algorithm, {}))


# Model-based settings shrunk for a CPU: fewer and smaller dynamics models, a capped model
# fit, 5k-state rollouts, and short warm starts. "*" entries apply to every algorithm that has
# the setting (ARMOR keeps its single model: its own entry restores members and elites).
_QUICK_MODEL = {
    "dynamics.members": 5, "dynamics.elites": 3, "dynamics.hidden_dims": (200, 200),
    "dynamics.max_epochs": 30, "rollouts.batch_size": 5_000,
    "model_buffer_capacity": 50_000, "warmstart_steps": 2_000,
}
_ARMOR_MODEL = {"dynamics.members": 1, "dynamics.elites": 1,
                "dynamics.weight_decays": (2.5e-5, 5e-5, 1e-4)}
_TINY_MODEL = {
    "dynamics.members": 2, "dynamics.elites": 1, "dynamics.hidden_dims": (32, 32),
    "dynamics.max_epochs": 3, "rollouts.batch_size": 100, "rollouts.refresh_every": 50,
    "model_buffer_capacity": 1_000,
    "warmstart_steps": 50, "bc_pretrain_steps": 50, "adversary_steps": 5,
    "adversary_batch_size": 64, "model_batch_size": 64, "conservative.num_samples": 2,
}

# The papers' (or their reference code's) number of updates, where it is not the profile's 1M;
# sources: docs/algorithms.md#training-length.
FULL_UPDATES = {"mopo": {"num_updates": 3_000_000}, "rambo": {"num_updates": 2_000_000},
                "sacn": {"num_updates": 3_000_000}, "edac": {"num_updates": 3_000_000},
                "mobile": {"num_updates": 3_000_000}}

RUN_PROFILES = {
    "tiny": RunProfile("tiny", TrainConfig(num_updates=200, eval_every=100, eval_episodes=2),
                       "tiny", ("hopper-medium",), 2,
                       {"*": {"agent.hidden_dims": (32, 32), "hidden_dims": (32, 32),
                              "td3.hidden_dims": (32, 32), "batch_size": 64, **_TINY_MODEL},
                        "armor": _ARMOR_MODEL}),
    # quick: what `make benchmark` runs on a 2-core CPU (56 min, docs/validation.md), chosen
    # from the validate profile's learning curves on hopper-medium-replay (results/validate,
    # 5 seeds): by 100k updates BC is at 20, TD3+BC at 80, IQL at 68 (at 50k they overlap BC),
    # so the four default algorithms separate where they do, on the validate data (the same
    # file as the validated rows). ReBRAC (67 at 100k) and the model-based methods need 20 to
    # 80 more minutes each on 2 cores; they run when asked for (--algos), the costly ones at
    # smoke budgets with the smaller settings below. The conservative critics (30 sampled
    # actions per state) are ~100x costlier per update than BC on a CPU, so they get fewer
    # updates and smaller critics here.
    "quick": RunProfile("quick", TrainConfig(num_updates=100_000, eval_every=10_000,
                                             eval_episodes=10),
                        "validate", ("hopper-medium-replay",), 3,
                        algorithm_overrides={"*": _QUICK_MODEL,
                                             "cql": {"agent.hidden_dims": (256, 256),
                                                     "conservative.num_samples": 5},
                                             "combo": {"agent.hidden_dims": (128, 128),
                                                       "batch_size": 128,
                                                       "conservative.num_samples": 5},
                                             "rambo": {"bc_pretrain_steps": 2_000,
                                                       "adversary_steps": 50},
                                             # A short run needs a faster slow rate: the
                                             # papers' 5e-7 over 1M updates moves the actor
                                             # about as far as ~0.5 / num_updates here.
                                             "armor": {**_ARMOR_MODEL,
                                                       "agent.hidden_dims": (128, 128),
                                                       "batch_size": 128,
                                                       "model_batch_size": 128,
                                                       "warmstart_steps": 1_000,
                                                       "agent.actor_lr": 1.5e-4,
                                                       "model_buffer_capacity": 100_000},
                                             # ReBRAC's batch of 1024 runs 4x slower on
                                             # 2 cores; its LayerNorm 3 x 256 critics stay.
                                             "rebrac": {"batch_size": 256},
                                             # hopper-medium's 500 (SAC-N) and 50 (EDAC)
                                             # critics take hours on 2 cores: 10 here, the
                                             # tables' N on a GPU.
                                             "sacn": {"agent.num_qs": 10,
                                                      "agent.hidden_dims": (256, 256)},
                                             "edac": {"agent.num_qs": 10,
                                                      "agent.hidden_dims": (128, 128),
                                                      "batch_size": 128},
                                             # Each update runs actor and target critics on
                                             # num_samples x elites next states per model row:
                                             # 18x a MOPO update on 2 cores at full width.
                                             "mobile": {"agent.hidden_dims": (128, 128),
                                                        "batch_size": 128, "num_samples": 4},
                                             "atac": {"agent.hidden_dims": (256, 256),
                                                      "warmstart_steps": 1_000,
                                                      "agent.actor_lr": 1e-4}},
                        train_overrides={
                            "cql": {"num_updates": 2_000, "eval_every": 500},
                            "combo": {"num_updates": 2_000, "eval_every": 1_000},
                            "mopo": {"num_updates": 5_000, "eval_every": 1_000},
                            "morel": {"num_updates": 5_000, "eval_every": 1_000},
                            "rambo": {"num_updates": 5_000, "eval_every": 1_000},
                            "armor": {"num_updates": 3_000, "eval_every": 1_000},
                            "atac": {"num_updates": 5_000, "eval_every": 1_000},
                            "mobile": {"num_updates": 5_000, "eval_every": 1_000},
                            "sacn": {"num_updates": 10_000, "eval_every": 1_000},
                            "edac": {"num_updates": 10_000, "eval_every": 1_000},
                        },
                        default_algorithms=("bc", "bc10", "iql", "td3bc")),
    # validate: the reproduction report (make validate), a resumable CPU job of hours. Full-size
    # networks and models; 200k updates for the cheap algorithms (5 seeds), fewer for the
    # costly ones (3 seeds: make validate runs them as a second invocation), each figure what
    # its share of the budget buys at the 2-core rates of benchmarks/; docs/validation.md.
    "validate": RunProfile(
        "validate", TrainConfig(num_updates=200_000, eval_every=10_000, eval_episodes=10),
        "validate", ("hopper-medium-replay", "hopper-medium-expert", "walker2d-medium-replay",
                     "halfcheetah-medium-replay"), 5,
        algorithm_overrides={
            "*": {"dynamics.max_epochs": 50},  # about 45k steps of model fitting per seed
            "rebrac": {"batch_size": 256},
            "sacn": {"agent.num_qs": 10}, "edac": {"agent.num_qs": 10},
        },
        train_overrides={
            "rebrac": {"num_updates": 100_000},
            "cql": {"num_updates": 20_000, "eval_every": 2_000},
            "combo": {"num_updates": 20_000, "eval_every": 2_000},
            "armor": {"num_updates": 20_000, "eval_every": 2_000},
            "atac": {"num_updates": 50_000, "eval_every": 5_000},
            "rambo": {"num_updates": 50_000, "eval_every": 5_000},
            "mobile": {"num_updates": 30_000, "eval_every": 5_000},
            "sacn": {"num_updates": 50_000, "eval_every": 5_000},
            "edac": {"num_updates": 50_000, "eval_every": 5_000},
        }),
    "full": RunProfile("full", TrainConfig(num_updates=1_000_000, eval_every=10_000,
                                           eval_episodes=10),
                       "full", tuple(f"{env}-{kind}" for env in
                                     ("halfcheetah", "hopper", "walker2d")
                                     for kind in ("medium", "medium-replay", "medium-expert")),
                       5, train_overrides=FULL_UPDATES),
}


def reference_updates(algorithms) -> dict[str, int]:
    """``{algorithm: updates}``: each algorithm's reference budget, the ``full`` profile's
    number of updates (the papers' counts), which the tables compare every run's budget with."""
    full = RUN_PROFILES["full"]
    return {name: full.train_for(name).num_updates for name in algorithms}
