"""``offrl bench``: sweep algorithms x tasks x seeds and write score tables."""

from __future__ import annotations

import ast
import sys

from offrl_jax.algorithms.registry import ALGORITHMS
from offrl_jax.training.runner import RUN_PROFILES


def default_profile() -> str:
    import jax

    return "quick" if jax.default_backend() == "cpu" else "full"


def parse_overrides(items: list[str]) -> dict:
    """``[ALGO.]FIELD=VALUE`` items into ``{algo or "*": {field: value}}``; values are Python
    literals (``3e-4``, ``256,256``), else strings."""
    out: dict = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set {item!r}: expected [ALGO.]FIELD=VALUE")
        algo, _, field = name.rpartition(".")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        out.setdefault(algo or "*", {})[field] = value
    return out


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark sweep")
    bench.add_argument("--algos", nargs="+", default=None, choices=sorted(ALGORITHMS),
                       help="default: the profile's algorithms (quick: armor bc combo iql "
                            "mopo; full: all)")
    bench.add_argument("--tasks", nargs="+", default=None,
                       help="task names, or NAME=ENV:PATH for your own D4RL file or Minari "
                            "directory (default: the profile's tasks)")
    bench.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    bench.add_argument("--profile", choices=sorted(RUN_PROFILES), default=None,
                       help="quick on a CPU (default there), full on a GPU (default there)")
    bench.add_argument("--out", default=None, help="run directory (default results/PROFILE)")
    bench.add_argument("--eval-backend", choices=("host", "device"), default=None)
    bench.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="[ALGO.]FIELD=VALUE", help="override a config field")
    bench.set_defaults(func=_bench)


def _bench(args) -> int:
    from offrl_jax.training.runner import run_benchmark

    profile = args.profile or default_profile()
    run_profile = RUN_PROFILES[profile]
    algos = args.algos or list(run_profile.default_algorithms or sorted(ALGORITHMS))
    tasks = args.tasks or list(run_profile.default_tasks)
    seeds = list(range(args.seeds or run_profile.default_seeds))
    out = args.out or f"results/{profile}"
    print(f"offrl bench: {len(algos)} algorithm(s) x {len(tasks)} task(s) x {len(seeds)} "
          f"seed(s), profile {profile}, output {out}", flush=True)
    run_benchmark(algos, tasks, seeds, profile, out, parse_overrides(args.overrides),
                  args.eval_backend, argv=sys.argv)
    return 0
