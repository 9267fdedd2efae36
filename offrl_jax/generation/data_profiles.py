"""Data profiles: how much behaviour training and how many transitions per generated dataset.

A data profile is named by a run profile (``offrl bench --profile``,
:mod:`offrl_jax.training.profiles`) for its generated data and chosen directly by
``offrl data generate --data-profile``. A generated file's metadata names it as
``recipe["profile"]`` (the key of the files written so far).

``full`` follows D4RL (1M-step SAC, 1M transitions per dataset); ``quick`` fits a 2-core CPU;
``tiny`` exists for the tests. Per-environment step budgets are data, not code. Where an
environment has shipped behaviour policies (:mod:`offrl_jax.policies`), ``quick`` and
``full`` only collect from them (``dataset_size`` rows per policy); the training budgets apply to
``offrl data train-behaviour`` and to environments without shipped policies.
"""

from __future__ import annotations

import dataclasses

from offrl_jax.parts import sac


@dataclasses.dataclass(frozen=True)
class DataProfile:
    name: str
    train_steps: dict[str, int]      # behaviour SAC env steps, per environment
    start_steps: int                 # uniform-random exploration steps at the start
    segment_steps: int               # env steps collected between two compiled update chunks
    eval_every_segments: int         # evaluate and keep a policy checkpoint this often
    eval_episodes: int
    dataset_size: int                # transitions in random / medium / expert
    collect_envs: int                # environments stepped together while collecting datasets
    sac: sac.Config = sac.Config()
    batch_size: int = 256            # behaviour SAC minibatch
    replay_scale: float | None = None  # medium-replay's schedule scale; None: dataset_size / 1M
    # Whether a generated file's metadata records the reference check's outcome
    # (``reference_check``); the check itself always runs, and a mismatch is an error.
    metadata_records_check: bool = True

    def steps_for(self, env: str) -> int:
        try:
            return self.train_steps[env]
        except KeyError:
            raise KeyError(f"data profile {self.name!r} has no behaviour budget for {env!r}; "
                           f"it covers {sorted(self.train_steps)}") from None


DATA_PROFILES = {
    "tiny": DataProfile(
        name="tiny",
        train_steps={env: 1500 for env in ("halfcheetah", "hopper", "walker2d", "ant")},
        start_steps=500, segment_steps=250, eval_every_segments=2, eval_episodes=2,
        dataset_size=1000, collect_envs=4,
        sac=sac.Config(hidden_dims=(32, 32), actor_lr=1e-3, critic_lr=1e-3), batch_size=64),
    "quick": DataProfile(
        name="quick",
        train_steps={"halfcheetah": 60_000, "hopper": 60_000, "walker2d": 60_000,
                     "ant": 60_000},
        start_steps=5_000, segment_steps=1_000, eval_every_segments=4, eval_episodes=4,
        # From shipped policies: 200k rows per policy (medium-replay: its schedule x 0.2), the
        # size the reproduction report asks for, about a minute per dataset on 2 cores.
        dataset_size=200_000, collect_envs=10),
    # The reproduction report's data (offrl bench --profile validate): 200k rows per policy
    # (medium-expert 400k) and medium-replay's whole schedule (hopper 240k), the sizes it asks for.
    # Its files were published (their sha256 in results/validate/README.md) before its reference
    # statistics were recorded, saying "no reference"; they keep saying it, so a regenerated
    # file has the published bytes, while the check against the manifest's
    # reference_stats.validate runs as for quick and full. The four validated tasks have one; a
    # dataset without a reference gets one, once its seed-0 file is made, from
    # `offrl data generate --env ENV --profile validate --kinds KIND --record-reference`,
    # which reads the statistics the file's metadata records.
    "validate": DataProfile(
        name="validate",
        train_steps={"halfcheetah": 60_000, "hopper": 60_000, "walker2d": 60_000,
                     "ant": 60_000},
        start_steps=5_000, segment_steps=1_000, eval_every_segments=4, eval_episodes=4,
        dataset_size=200_000, collect_envs=10, replay_scale=1.0,
        metadata_records_check=False),
    "full": DataProfile(
        name="full",
        train_steps={env: 1_000_000 for env in ("halfcheetah", "hopper", "walker2d", "ant")},
        start_steps=10_000, segment_steps=1_000, eval_every_segments=10, eval_episodes=10,
        dataset_size=1_000_000, collect_envs=20),
}


def get_data_profile(name: str) -> DataProfile:
    try:
        return DATA_PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown data profile {name!r}; valid data profiles: "
                       f"{sorted(DATA_PROFILES)}") from None
