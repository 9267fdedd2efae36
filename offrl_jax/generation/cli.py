"""``offrl data``: generate the suite's D4RL-style datasets, print their statistics beside D4RL's,
train and export behaviour policies."""

from __future__ import annotations

from offrl_jax.generation.data_profiles import DATA_PROFILES
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
    gen.add_argument("--data-profile", "--profile", dest="profile",
                     choices=sorted(DATA_PROFILES), default=None,
                     help="data profile: quick (CPU-sized) or full (D4RL sizes); default: "
                          "quick on a CPU, full with an accelerator (--profile: the older name)")
    gen.add_argument("--kinds", nargs="+", default=list(DATASET_KINDS), choices=DATASET_KINDS)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default=None, help="output directory (default: the data cache, "
                                                 "$OFFRL_DATA_DIR or ~/.cache/offrl_jax)")
    gen.add_argument("--force", action="store_true", help="regenerate existing valid files")
    gen.add_argument("--no-check", dest="check", action="store_false",
                     help="keep data whose statistics differ from the shipped reference "
                          "statistics (recorded in the file's metadata) instead of failing")
    gen.add_argument("--record-reference", action="store_true",
                     help="write the generated datasets' statistics into the shipped manifest "
                          "as the reference other machines are checked against (maintainers)")
    gen.set_defaults(func=_generate)

    stats = data_sub.add_parser(
        "stats", help="statistics of generated datasets (and any D4RL/Minari files given) "
                      "beside D4RL v2's")
    stats.add_argument("--env", nargs="+", default=["halfcheetah", "hopper", "walker2d"],
                       choices=sorted(ENV_SPECS))
    stats.add_argument("--data-profile", "--profile", dest="profile",
                       choices=sorted(DATA_PROFILES), default=None,
                       help="data profile (default as for generate; --profile: the older name)")
    stats.add_argument("--files", nargs="*", default=[],
                       help="ENV:PATH of further D4RL .hdf5 files or Minari directories")
    stats.set_defaults(func=_stats)

    export = data_sub.add_parser(
        "export-behaviour", help="choose medium, expert and medium-replay snapshots of a "
                                 "behaviour run and write them to the shipped policies")
    export.add_argument("--env", required=True, choices=sorted(ENV_SPECS))
    export.add_argument("--work-dir", required=True)
    export.add_argument("--replay-every", type=int, default=10_000)
    export.add_argument("--eval-episodes", type=int, default=50)
    export.add_argument("--candidates", type=int, default=5,
                        help="expert candidates re-evaluated (medium: twice as many)")
    export.set_defaults(func=_export)

    train = data_sub.add_parser(
        "train-behaviour",
        help="train (or resume) the behaviour SAC policy of one environment; resumable, "
             "checkpoints every evaluation")
    train.add_argument("--env", required=True, choices=sorted(ENV_SPECS))
    train.add_argument("--data-profile", "--profile", dest="profile",
                       choices=sorted(DATA_PROFILES), default="full",
                       help="data profile whose behaviour budget is trained (--profile: the "
                            "older name)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--work-dir", required=True,
                       help="resume directory (saved state and replay segments)")
    train.add_argument("--backend", choices=("host", "device"), default="host",
                       help="host: our SAC collecting on Gymnasium v4 (the reference); device: "
                            "brax's SAC on the MJX tasks, on one accelerator (needs the brax "
                            "extra; not resumable; see offrl_jax/generation/brax_behaviour.py)")
    train.add_argument("--num-envs", type=int, default=100,
                       help="device backend: environments stepped together (one update per "
                            "environment step); must divide the warm-up and evaluation steps")
    train.set_defaults(func=_train_behaviour)


def _generate(args) -> int:
    from offrl_jax.data import read_d4rl_metadata
    from offrl_jax.generation.generate import generate_env_datasets

    profile = args.profile or default_profile()
    for env in args.env:
        paths = generate_env_datasets(env, profile, seed=args.seed, kinds=args.kinds,
                                      out_dir=args.out, force=args.force,
                                      check=args.check and not args.record_reference)
        for path in paths.values():
            meta = read_d4rl_metadata(path)
            st = meta["statistics"]
            print(f"{meta['dataset_id']}: {path} ({st['transitions']} transitions, "
                  f"{st['episodes']} episodes, normalized {st['normalized_mean']:.1f} +- "
                  f"{st['normalized_std']:.1f}, mean length {st['length_mean']:.0f}; "
                  f"reference check: {meta['reference_check']})")
        if args.record_reference:
            from offrl_jax.generation.generate import record_reference_statistics

            print(f"recorded reference statistics in "
                  f"{record_reference_statistics(env, profile, paths)}")
    return 0


def _stats(args) -> int:
    from offrl_jax.generation.stats import stats_table

    print(stats_table(args.env, args.profile or default_profile(), args.files))
    return 0


def _export(args) -> int:
    from offrl_jax.generation.export import export_behaviour

    path = export_behaviour(args.env, args.work_dir, replay_every=args.replay_every,
                            eval_episodes=args.eval_episodes, candidates=args.candidates)
    print(f"wrote {path}")
    return 0


def _train_behaviour(args) -> int:
    from offrl_jax.generation.data_profiles import get_data_profile

    if args.backend == "device":
        from offrl_jax.generation.brax_behaviour import train_behaviour_device

        run = train_behaviour_device(args.env, get_data_profile(args.profile), args.seed,
                                     args.work_dir, num_envs=args.num_envs)
    else:
        from offrl_jax.generation.behaviour import train_behaviour

        run = train_behaviour(args.env, get_data_profile(args.profile), args.seed, args.work_dir)
    for c in run.checkpoints:
        print(f"{args.env} env_steps={c.env_steps} mean_return={c.mean_return:.1f}")
    return 0
