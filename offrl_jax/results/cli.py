"""``offrl report``: merge run directories into one summary."""

from __future__ import annotations


def register(subparsers) -> None:
    report = subparsers.add_parser(
        "report", help="merge several run directories into one summary, tables and plots")
    report.add_argument("dirs", nargs="+", help="run directories (each with run.json, records/)")
    report.add_argument("--out", required=True, help="the merged run directory to write")
    report.add_argument("--algos", nargs="+", metavar="ALGO",
                        help="keep only these algorithms' records (default: all), e.g. a GPU "
                             "run's algorithms with the CPU run's BC as their baseline")
    report.set_defaults(func=_report)


def _report(args) -> int:
    from offrl_jax.algorithms.registry import ALGORITHMS
    from offrl_jax.results.merge import MergeError, merge_runs
    from offrl_jax.training.profiles import reference_updates

    try:
        rows = merge_runs(args.dirs, args.out, args.algos,
                          reference_updates=reference_updates(ALGORITHMS))
    except MergeError as error:
        raise SystemExit(f"offrl report: {error}") from None
    print(f"offrl report: {len(args.dirs)} run(s), {len(rows)} table row(s): "
          f"{args.out}/summary.md", flush=True)
    return 0
