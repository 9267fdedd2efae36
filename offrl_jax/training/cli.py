"""``offrl bench``: sweep algorithms x tasks x seeds and write score tables."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from offrl_jax.algorithms.registry import ALGORITHMS
from offrl_jax.results.labels import format_value
from offrl_jax.training.profiles import RUN_PROFILES

# Where a run goes without --out: outside the tracked results/ (the .gitignore's /runs/), so a
# user's run never overwrites the committed tables; `make results-quick` regenerates those.
DEFAULT_OUT_ROOT = "runs"

# Profiles that train each algorithm for a fraction of its reference budget (the full
# profile's updates): their summary.md opens with a note saying so (budget_note).
BUDGET_PROFILES = ("quick", "tiny")
VALIDATED_SUMMARY = "results/validate/summary.md"
VALIDATED_TABLE = "results/validate/summary.csv"


def default_out(profile: str) -> str:
    return f"{DEFAULT_OUT_ROOT}/{profile}"


def default_profile() -> str:
    import jax

    return "quick" if jax.default_backend() == "cpu" else "full"


def parse_overrides(items: list[str]) -> dict:
    """``[ALGO.]PATH=VALUE`` items into ``{algo or "*": {path: value}}``. A path is a setting's
    dotted name in the config (``rollouts.horizon``, ``agent.actor_lr``); a first component
    that names an algorithm (or ``*``) scopes it to that algorithm. Values are Python literals
    (``3e-4``, ``256,256``), else strings."""
    out: dict = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SystemExit(f"--set {item!r}: expected [ALGO.]PATH=VALUE, e.g. "
                             f"mopo.rollouts.horizon=1 or dynamics.hidden_dims=200,200")
        head, dot, rest = name.partition(".")
        algo, field = (head, rest) if dot and (head in ALGORITHMS or head == "*") else ("", name)
        if not field:
            raise SystemExit(f"--set {item!r}: expected a setting after {head!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        out.setdefault(algo or "*", {})[field] = value
    return out


def parse_sweeps(items: list[str]) -> dict[str, list[float]]:
    """``LEAF=V1,V2,...`` items into ``{leaf: [values]}``; values are floats, at least one,
    none repeated, each leaf once."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SystemExit(f"--sweep {item!r}: expected LEAF=VALUE[,VALUE...], e.g. "
                             f"penalty_coef=0.5,1,2.5,5")
        texts = [text.strip() for text in raw.split(",") if text.strip()]
        if not texts:
            raise SystemExit(f"--sweep {item!r}: expected at least one value after '='")
        try:
            values = [float(text) for text in texts]
        except ValueError:
            raise SystemExit(f"--sweep {item!r}: values must be numbers, found "
                             f"{raw!r}") from None
        if len(set(values)) != len(values):
            raise SystemExit(f"--sweep {item!r}: a value repeats")
        if name in out:
            raise SystemExit(f"--sweep {name}: given twice; one --sweep per leaf")
        out[name] = values
    return out


def _count(value: int | None, flag: str, minimum: int = 1) -> str | None:
    if value is None or value >= minimum:
        return None
    return f"{flag}: expected a whole number >= {minimum}, found {value}"


def check_bench_numbers(args) -> None:
    """Every numeric flag of ``offrl bench`` checked before any data step: one line naming the
    flag, what it expects and what it found (SystemExit). How the flags fit each other and the
    profile (``--eval-every`` dividing ``--updates``) is checked by the runner's
    ``train_configs``, also before any data step."""
    problems = [problem for problem in (
        _count(args.seeds, "--seeds"), _count(args.updates, "--updates"),
        _count(args.eval_every, "--eval-every"), _count(args.eval_episodes, "--eval-episodes"))
        if problem]
    if args.ray_gpus_per_cell is not None and not args.ray_gpus_per_cell >= 0:
        problems.append(f"--ray-gpus-per-cell: expected a number >= 0, found "
                        f"{args.ray_gpus_per_cell:g}")
    if args.ray_cpus_per_cell is not None and not args.ray_cpus_per_cell > 0:
        problems.append(f"--ray-cpus-per-cell: expected a number > 0, found "
                        f"{args.ray_cpus_per_cell:g}")
    if problems:
        raise SystemExit("offrl bench: " + "; ".join(problems))


def budget_note(profile: str, updates: dict[str, int], tasks=(), validated=None) -> str:
    """The paragraph that opens a budget profile's summary.md: every row whose updates
    (``{algorithm: updates}``) are below its reference budget (the full profile's, the papers'
    counts) is budget-limited, and where the validated numbers are, with the validated final
    scores of the same algorithms on ``tasks`` when ``validated`` (the path of
    results/validate/summary.csv; default: the repository's) has them. Empty when no row is
    limited."""
    reference = RUN_PROFILES["full"]
    limited = {name: (count, reference.train_for(name).num_updates)
               for name, count in sorted(updates.items())
               if count < reference.train_for(name).num_updates}
    if profile not in BUDGET_PROFILES or not limited:
        return ""
    rows = ", ".join(f"{name} {format_count(count)} of {format_count(budget)}"
                     for name, (count, budget) in limited.items())
    share = max(count / budget for count, budget in limited.values())
    same = validated_rows(sorted(limited), tasks, validated)
    where = (f" Validated on the same tasks (full-size networks, the validate profile's "
             f"budgets; final score, mean ± sample std over seeds, {VALIDATED_SUMMARY}): "
             f"{same}." if same else f" The validated numbers are in the repository's "
             f"{VALIDATED_SUMMARY}.")
    return (f"**A budget-limited run, not the benchmark's result.** The `{profile}` profile "
            f"trains each algorithm for at most {share:.0%} of its reference budget (the "
            f"papers' update counts, the `full` profile), so its scores rank what separates "
            f"early, not what the algorithms reach. Budget-limited rows (updates trained of "
            f"the reference budget): {rows}.{where}\n\n")


def validated_rows(algorithms, tasks, path=None) -> str:
    """``"bc 22.0 ± 9.1 (5 seeds), ..."``: the validated final scores of ``algorithms`` on
    ``tasks`` from results/validate/summary.csv (the repository's when ``path`` is None); empty
    when the file or the rows are absent."""
    import csv

    path = Path(path) if path is not None else (
        Path(__file__).resolve().parents[2] / VALIDATED_TABLE)
    if not path.is_file():
        return ""
    with path.open(newline="") as handle:
        table = {(row["algorithm"], row["task"]): row for row in csv.DictReader(handle)}
    found = []
    for task in tasks:
        rows = [f"{name} {float(row['final_mean']):.1f} ± {float(row['final_std']):.1f} "
                f"({row['seeds']} seeds)" for name in algorithms
                if (row := table.get((name, task))) is not None]
        if rows and len(tasks) > 1:
            rows[-1] += f" on {task}"
        found += rows
    return ", ".join(found)


def format_count(count: int) -> str:
    """``10000`` as ``10k``, ``1000000`` as ``1M``."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size and count % (size // 10) == 0:
            return f"{count / size:g}{suffix}"
    return str(count)


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="run a benchmark sweep")
    bench.add_argument("--algos", nargs="+", default=None, choices=sorted(ALGORITHMS),
                       help="default: the profile's algorithms (every registered one in "
                            "quick and full)")
    bench.add_argument("--tasks", nargs="+", default=None,
                       help="task names, NAME=ENV:PATH for your own D4RL file or Minari "
                            "directory, or a Minari dataset id (mujoco/hopper/medium-v0; needs "
                            "the minari package and the dataset in the local Minari directory) "
                            "(default: the profile's tasks)")
    bench.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    bench.add_argument("--profile", choices=sorted(RUN_PROFILES), default=None,
                       help="quick on a CPU (default there), full on a GPU (default there)")
    bench.add_argument("--out", default=None,
                       help="run directory (default runs/PROFILE, outside git; "
                            "make results-quick writes the committed results/quick)")
    bench.add_argument("--eval-backend", choices=("host", "device"), default=None)
    bench.add_argument("--updates", type=int, default=None,
                       help="updates per algorithm (default: the profile's)")
    bench.add_argument("--eval-every", type=int, default=None,
                       help="updates between evaluations (default: the profile's; must divide "
                            "--updates and be a multiple of a model-based algorithm's "
                            "rollouts.refresh_every)")
    bench.add_argument("--eval-episodes", type=int, default=None,
                       help="episodes per evaluation (default: the profile's)")
    bench.add_argument("--tensorboard", action="store_true",
                       help="also write the scalar logs as TensorBoard event files, one log "
                            "directory per algorithm x task x seed: OUT/logs/ALGO__TASK/seedS/ "
                            "(tensorboard --logdir OUT/logs; needs tensorboardX: "
                            "pip install -e '.[tensorboard]')")
    bench.add_argument("--config", default=None, metavar="RUN_DIR/config.json",
                       help="relaunch a run exactly from the config.json it wrote (every "
                            "setting resolved); only --out may be given with it")
    bench.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="[ALGO.]PATH=VALUE",
                       help="override a setting by its path, for one algorithm "
                            "(mopo.rollouts.horizon=1) or every chosen one that has it "
                            "(dynamics.hidden_dims=200,200); a path no chosen algorithm has is "
                            "an error. Paths and sources: docs/algorithms.md")
    bench.add_argument("--sweep", dest="sweeps", action="append", default=[],
                       metavar="LEAF=V1,V2,...",
                       help="sweep a hyperparameter that is a float leaf of every chosen "
                            "algorithm's state (mopo: penalty_coef; combo: cql_weight; rambo: "
                            "adversary_weight; atac: beta; ...), set after init: each "
                            "(algorithm, task) trains values x seeds rows as one program, "
                            "and each value is its own table row, e.g. "
                            "mopo[penalty_coef=2.5]. One --sweep is the usual case; several "
                            "sweep the grid of all combinations")
    bench.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run the cells (algorithm x task) as Ray tasks: auto (the cluster "
                            "`ray start` runs here), local (start Ray on this machine for this "
                            "run) or the head's HOST:PORT; the run directory and the data must "
                            "be on a filesystem every node shares. Needs the ray extra "
                            "(pip install -e '.[ray]'); docs/distributed.md")
    bench.add_argument("--ray-gpus-per-cell", type=float, default=None, metavar="N",
                       help="GPUs each cell asks Ray for (default: 1 when the cluster has "
                            "GPUs, else 0; a fraction shares a GPU)")
    bench.add_argument("--ray-cpus-per-cell", type=float, default=None, metavar="N",
                       help="CPUs each cell asks Ray for (default 1)")
    bench.set_defaults(func=_bench)

    evaluate = subparsers.add_parser(
        "evaluate", help="re-evaluate a finished run's final policies and export every episode")
    evaluate.add_argument("run_dir", help="a run directory (with config.json and checkpoints)")
    evaluate.add_argument("--episodes", type=int, default=None,
                          help="episodes per row (default: the run's evaluation episodes)")
    evaluate.add_argument("--backend", choices=("host", "device"), default=None)
    evaluate.add_argument("--seed", type=int, default=None,
                          help="other episodes (default: those of the run's last evaluation)")
    evaluate.add_argument("--out", default=None, help="default: RUN_DIR/evaluation")
    evaluate.set_defaults(func=_evaluate)


def _bench(args) -> int:
    from offrl_jax.algorithms.base import ConfigError
    from offrl_jax.training.compilation_cache import enable_compilation_cache
    from offrl_jax.training.distributed import CellsFailed, RayUnavailable
    from offrl_jax.training.loop import SweepError
    from offrl_jax.training.plan import plan_run
    from offrl_jax.training.runner import read_run_config, run_plan

    check_bench_numbers(args)
    # Before the first compilation: a resumed or repeated run reads its programs from disk
    # ($OFFRL_JAX_CACHE_DIR, "off" disables; offrl_jax/training/compilation_cache.py).
    enable_compilation_cache()
    if args.tensorboard:
        from offrl_jax.results.tensorboard import TensorBoardUnavailable, require

        try:
            require()
        except TensorBoardUnavailable as error:
            raise SystemExit(f"offrl bench: {error}") from None
    exact = None
    if args.config is not None:
        given = [flag for flag, value in (
            ("--algos", args.algos), ("--tasks", args.tasks), ("--seeds", args.seeds),
            ("--profile", args.profile), ("--eval-backend", args.eval_backend),
            ("--set", args.overrides), ("--sweep", args.sweeps), ("--updates", args.updates),
            ("--eval-every", args.eval_every), ("--eval-episodes", args.eval_episodes))
            if value is not None and value != []]
        if given:
            raise SystemExit(f"offrl bench: --config relaunches a run as it was; remove "
                             f"{', '.join(given)} (only --out may change)")
        try:
            exact = read_run_config(args.config)
        except ConfigError as error:
            raise SystemExit(f"offrl bench: --config {error}") from None
        args.profile, args.algos, args.tasks = (exact["profile"], exact["algorithms"],
                                                exact["tasks"])
    ray, cluster = _connect_ray(args)
    gpus = cluster["resources"].get("GPU") if cluster else None
    profile = args.profile or (("full" if gpus else "quick") if cluster else default_profile())
    run_profile = RUN_PROFILES[profile]
    algos = args.algos or list(run_profile.default_algorithms or sorted(ALGORITHMS))
    tasks = args.tasks or list(run_profile.default_tasks)
    seeds = (list(exact["seeds"]) if exact else
             list(range(run_profile.default_seeds if args.seeds is None else args.seeds)))
    out = args.out or default_out(profile)
    sweep = exact["sweep"] if exact else parse_sweeps(args.sweeps)
    schedule = {name: value for name, value in (
        ("num_updates", args.updates), ("eval_every", args.eval_every),
        ("eval_episodes", args.eval_episodes)) if value is not None}
    swept = "".join(f" x {len(values)} value(s) of {name} ({','.join(map(format_value, values))})"
                    for name, values in sweep.items())
    print(f"offrl bench: {len(algos)} algorithm(s) x {len(tasks)} task(s) x {len(seeds)} "
          f"seed(s){swept}, profile {profile}, output {out}", flush=True)
    try:
        plan = plan_run(algos, tasks, seeds, profile, out, parse_overrides(args.overrides),
                        args.eval_backend, sweep=sweep, schedule=schedule, exact=exact)
        run_plan(plan, argv=sys.argv, progress=True, tensorboard=args.tensorboard, ray=ray)
    except (RayUnavailable, CellsFailed) as error:
        raise SystemExit(f"offrl bench: {error}") from None
    except SweepError as error:
        raise SystemExit(f"offrl bench: --{error}") from None
    except ConfigError as error:
        raise SystemExit(f"offrl bench: {error}") from None
    updates = {name: plan.trains[name].num_updates for name in algos}
    note = budget_note(profile, updates, tasks)
    if note:
        _open_summary_with(Path(out) / "summary.md", note)
    return 0


def _open_summary_with(path: Path, note: str) -> None:
    from offrl_jax.files import write_text_atomic

    if path.exists():
        write_text_atomic(path, note + path.read_text())


def _connect_ray(args):
    """``(RayConfig, cluster)`` for ``--ray`` (connected, so the default profile can follow the
    cluster's GPUs), or ``(None, None)``."""
    if args.ray is None:
        if args.ray_gpus_per_cell is not None or args.ray_cpus_per_cell is not None:
            raise SystemExit("offrl bench: --ray-gpus-per-cell and --ray-cpus-per-cell need "
                             "--ray")
        return None, None
    import jax

    from offrl_jax.training.distributed import RayConfig, RayUnavailable, connect, import_ray

    ray = RayConfig(args.ray, args.ray_gpus_per_cell,
                    1.0 if args.ray_cpus_per_cell is None else args.ray_cpus_per_cell)
    try:
        import_ray()
        # The driver makes data, configs and tables only: the GPUs are the cells'.
        jax.config.update("jax_platforms", "cpu")
        return ray, connect(ray)
    except RayUnavailable as error:
        raise SystemExit(f"offrl bench: {error}") from None


def _evaluate(args) -> int:
    from offrl_jax.algorithms.base import ConfigError
    from offrl_jax.training.reevaluate import reevaluate

    problem = _count(args.episodes, "--episodes") or _count(args.seed, "--seed", minimum=0)
    if problem:
        raise SystemExit(f"offrl evaluate: {problem}")
    try:
        reevaluate(args.run_dir, args.out, args.episodes, args.backend, args.seed)
    except (ConfigError, FileNotFoundError) as error:
        raise SystemExit(f"offrl evaluate: {error}") from None
    return 0
