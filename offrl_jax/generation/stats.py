"""``offrl data stats``: each dataset's statistics beside D4RL v2's published ones.

Besides the mean, three columns say how good the best episodes are (normalized returns,
:func:`~offrl_jax.generation.generate.return_statistics`): the best episode, the mean of the
best tenth of the episodes (the ones 10%BC clones) and the share of transitions from episodes
scoring above 90.
"""

from __future__ import annotations

from pathlib import Path

from offrl_jax.data import read_d4rl_hdf5, read_d4rl_metadata, read_minari
from offrl_jax.generation.generate import dataset_statistics, return_statistics
from offrl_jax.generation.reference import d4rl_stats, within_target
from offrl_jax.generation.versions import generated_file
from offrl_jax.tasks import DATASET_KINDS

HEADER = ("| dataset | transitions | episodes | normalized mean +- std | normalized max "
          "| top-10% episodes' mean | transitions from episodes > 90 | mean length "
          "| D4RL v2: transitions, episodes, normalized mean +- std, mean length "
          "| in target band |\n|---|---|---|---|---|---|---|---|---|---|")


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def stats_row(name: str, env: str, kind: str, stats: dict | None) -> str:
    ref = d4rl_stats(env, kind)
    ref_text = "-"
    if ref is not None:
        spread = "" if ref.normalized_std is None else f" +- {ref.normalized_std}"
        episodes = "-" if ref.episodes is None else f"{ref.episodes:,}"
        ref_text = (f"{ref.transitions:,}, {episodes}, {ref.normalized_mean}{spread}, "
                    f"{_fmt(ref.mean_length, 0)}")
    if stats is None:
        return f"| {name} | not generated | | | | | | | {ref_text} | |"
    ok = within_target(env, kind, stats["normalized_mean"])
    band = {None: "-", True: "yes", False: "no"}[ok]
    return (f"| {name} | {stats['transitions']:,} | {stats['episodes']:,} | "
            f"{stats['normalized_mean']:.1f} +- {stats['normalized_std']:.1f} | "
            f"{stats['normalized_max']:.1f} | {stats['normalized_top_decile_mean']:.1f} | "
            f"{100 * stats['share_above_90']:.1f}% | "
            f"{stats['length_mean']:.0f} | {ref_text} | {band} |")


def file_statistics(env: str, path: str | Path) -> dict:
    """:func:`dataset_statistics` and :func:`return_statistics` of a D4RL ``.hdf5`` file or a
    Minari directory."""
    path = Path(path)
    data = read_minari(path, env=env) if path.is_dir() else read_d4rl_hdf5(path, env=env)
    return {**dataset_statistics(env, data), **return_statistics(env, data)}


def stats_table(envs, profile: str, files=()) -> str:
    """Markdown: every generated dataset of ``envs`` for ``profile`` (read from its metadata),
    then each ``ENV:PATH`` file (computed), beside D4RL v2."""
    rows = [HEADER]
    for env in envs:
        for kind in DATASET_KINDS:
            path = generated_file(env, kind, profile)
            stats, name = None, path.stem
            if path.is_file():
                meta = read_d4rl_metadata(path)
                data = read_d4rl_hdf5(path, env=env)
                stats = {**(meta.get("statistics") or dataset_statistics(env, data)),
                         **return_statistics(env, data)}
                name = meta.get("dataset_id", name)
            rows.append(stats_row(f"{name} ({profile})", env, kind, stats))
    for item in files:
        env, sep, path = item.partition(":")
        if not sep:
            raise ValueError(f"--files entry {item!r}: expected ENV:PATH")
        kind = next((k for k in sorted(DATASET_KINDS, key=len, reverse=True)
                     if k.replace("-", "_") in Path(path).name.replace("-", "_")), "custom")
        rows.append(stats_row(Path(path).name, env, kind, file_statistics(env, path)))
    return "\n".join(rows)
