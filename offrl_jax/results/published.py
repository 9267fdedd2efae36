"""Published normalized D4RL scores, for the comparison table (:mod:`offrl_jax.results.compare`).

Each value is the mean over seeds that a paper reports for an algorithm on a D4RL dataset, with
its source. They come from D4RL's own datasets (version in the source), the paper's training
budget (mostly 1M updates or more; 3M for SAC-N, EDAC and MOBILE), its seeds and its
evaluation (papers rarely say whether a number is the last or the best evaluation). The suite's
validation runs use its own generated data and budgets of 10k to 200k updates: these numbers
say what the method reaches when it works, not what a validation row must show.

Only the datasets of the validation profile are listed; add rows with their sources.
"""

from __future__ import annotations

SOURCES = {
    "armor": "ARMOR paper (Bhardwaj et al., 2023, arXiv 2211.04538), Table 1, D4RL v2",
}

# {task: {algorithm: (score, source key)}}
PUBLISHED: dict[str, dict[str, tuple[float, str]]] = {
    "hopper-medium-replay": {
        "armor": (97.1, "armor"),
        "morel": (93.6, "armor"),
        "mopo": (67.5, "armor"),
        "rambo": (96.6, "armor"),
        "combo": (89.5, "armor"),
        "atac": (102.5, "armor"),
        "cql": (48.6, "armor"),
        "iql": (94.7, "armor"),
        "bc": (11.8, "armor"),
    },
    "hopper-medium-expert": {
        "armor": (103.4, "armor"),
        "morel": (108.7, "armor"),
        "mopo": (23.7, "armor"),
        "rambo": (83.3, "armor"),
        "combo": (111.1, "armor"),
        "atac": (111.9, "armor"),
        "cql": (111.0, "armor"),
        "iql": (91.5, "armor"),
        "bc": (111.9, "armor"),
    },
}


def published_score(algorithm: str, task: str) -> tuple[float, str] | None:
    """``(score, source)`` for an algorithm's name and a task (``hopper-medium-replay``, with or
    without a ``-v2`` suffix), or None where no paper's number is recorded here."""
    task = task.removesuffix("-v2").removesuffix("-v0")
    entry = PUBLISHED.get(task, {}).get(algorithm)
    return None if entry is None else (entry[0], SOURCES[entry[1]])
