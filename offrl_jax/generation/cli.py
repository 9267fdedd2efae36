"""``offrl data generate``: make the suite's D4RL-style datasets for one or more environments."""

from __future__ import annotations

from offrl_jax.generation.profiles import PROFILES
from offrl_jax.tasks import DATASET_KINDS, ENV_SPECS


def default_profile() -> str:
    """``quick`` on a CPU-only machine, ``full`` where JAX sees an accelerator."""
    import jax

    return "quick" if jax.default_backend() == "cpu" else "full"


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="dataset commands")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="generate D4RL-style datasets (no download)")
    gen.add_argument("--env", nargs="+", default=["hopper"], choices=sorted(ENV_SPECS))
    gen.add_argument("--profile", choices=sorted(PROFILES), default=None,
                     help="quick (CPU-sized) or full (D4RL sizes); default: quick on a CPU, "
                          "full with an accelerator")
    gen.add_argument("--kinds", nargs="+", default=list(DATASET_KINDS), choices=DATASET_KINDS)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default=None, help="output directory (default: the data cache, "
                                                 "$OFFRL_DATA_DIR or ~/.cache/offrl_jax)")
    gen.add_argument("--force", action="store_true", help="regenerate existing valid files")
    gen.set_defaults(func=_generate)


def _generate(args) -> int:
    from offrl_jax.data import read_d4rl_metadata
    from offrl_jax.generation.generate import generate_env_datasets

    profile = args.profile or default_profile()
    for env in args.env:
        paths = generate_env_datasets(env, profile, seed=args.seed, kinds=args.kinds,
                                      out_dir=args.out, force=args.force)
        for kind, path in paths.items():
            meta = read_d4rl_metadata(path)
            print(f"{env}-{kind}: {path} ({meta['dataset_episodes']} episodes, mean return "
                  f"{meta['dataset_episode_return_mean']:.1f})")
    return 0
