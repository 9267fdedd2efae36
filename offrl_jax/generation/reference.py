"""D4RL v2's published dataset statistics, the targets of the suite's generated datasets.

Mean episode return (normalized with D4RL's reference returns), its standard deviation across
episodes, transitions, episodes and mean episode length of D4RL's v2 MuJoCo files. Sources:
the D4RL paper (Fu et al. 2020, arXiv:2004.07219, appendix C: how each kind was made) and the
dataset catalog of TensorFlow Datasets (``d4rl_mujoco_*/v2-*``: sizes, episode counts and
returns computed from the released files). The medium-expert figures are those of the
concatenation (medium's episodes, then expert's).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    transitions: int
    episodes: int | None
    normalized_mean: float
    normalized_std: float | None
    mean_length: float | None


D4RL_V2: dict[str, DatasetStats] = {
    "halfcheetah-random": DatasetStats(1_000_000, 1000, -0.1, None, 1000),
    "halfcheetah-medium": DatasetStats(1_000_000, 1000, 40.7, 2.9, 1000),
    "halfcheetah-medium-replay": DatasetStats(202_000, 202, 27.2, 13.5, 1000),
    "halfcheetah-expert": DatasetStats(1_000_000, 1000, 88.1, 3.6, 1000),
    "halfcheetah-medium-expert": DatasetStats(2_000_000, 2000, 64.4, None, 1000),
    "hopper-random": DatasetStats(1_000_000, 45_000, 1.2, None, 22),
    "hopper-medium": DatasetStats(1_000_000, 2186, 44.3, 11.6, 457),
    "hopper-medium-replay": DatasetStats(402_000, 2041, 15.0, 15.7, 197),
    "hopper-expert": DatasetStats(1_000_000, 1027, 108.5, 10.1, 973),
    "hopper-medium-expert": DatasetStats(2_000_000, 3213, 64.8, None, None),
    "walker2d-random": DatasetStats(1_000_000, 49_000, 0.0, None, 20),
    "walker2d-medium": DatasetStats(1_000_000, 1190, 62.1, 23.9, 840),
    "walker2d-medium-replay": DatasetStats(302_000, 1093, 14.8, 19.5, 276),
    "walker2d-expert": DatasetStats(1_000_000, 1000, 107.2, 3.0, 999),
    "walker2d-medium-expert": DatasetStats(2_000_000, 2190, 82.7, None, None),
}

# Acceptance bands against D4RL's mean (our own choice of how close is "D4RL-grade"):
# medium within 15% of D4RL's mean, expert at least 90% of it, medium-replay within 25%.
TARGET_BANDS = {"medium": (0.85, 1.15), "expert": (0.90, None), "medium-replay": (0.75, 1.25)}


def d4rl_stats(env: str, kind: str) -> DatasetStats | None:
    return D4RL_V2.get(f"{env}-{kind}")


def within_target(env: str, kind: str, normalized_mean: float) -> bool | None:
    """Whether a dataset's mean normalized return is in the band around D4RL's (None: no band)."""
    reference, band = d4rl_stats(env, kind), TARGET_BANDS.get(kind)
    if reference is None or band is None:
        return None
    low, high = band
    ok = normalized_mean >= low * reference.normalized_mean
    if high is not None:
        ok = ok and normalized_mean <= high * reference.normalized_mean
    return bool(ok)
