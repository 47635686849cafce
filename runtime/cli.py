"""The `ae-dynamics` command: experiments from a TOML config, sweeps on Dask, and the
existing jobs (derive, figures, universality) behind one name.

Exit status: 0 success; 1 a run or a sweep point failed (recorded in summary.json); 2 bad
usage or a bad config (one message naming the key; nothing written); 130 interrupted.
"""
import os

# small dense linear algebra is slowed down, not sped up, by BLAS threads competing for a few
# cores (and a sweep runs one task per core); must be set before numpy is imported
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

PROG = "ae-dynamics"

RUN_HELP = """Run one experiment: integrate the equations of motion for the config and simulate
SGD from the same initial weights. Writes error.png, curves.csv and summary.json into --out.
Every config key, its default and meaning are listed below and in the README."""

SWEEP_HELP = """Run a grid of experiments on Dask: the cartesian product of the config's [sweep]
lists. The theory of each point and each SGD seed are separate tasks. Writes results.parquet,
results.csv (one row per point and time), points/<hash>.json (each point as it finishes),
summary.json and sweep.png into --out. Rerunning into the same --out computes only the points
without a result. Exit status 1 if any point failed."""

#: subcommands that hand their arguments to an existing job's own command line
JOBS = {
    "derive": ("derive activations with SymPy and write generated/NAME.py (python -m derive)",
               "derive.__main__"),
    "figures": ("the paper's phenomena: PNG, JSON and CSV per experiment (python -m runtime.experiments)",
                "runtime.experiments.__main__"),
    "universality": ("equations on a real data set's spectrum vs SGD on its samples (python -m runtime.universality)",
                     "runtime.universality"),
}


def parser():
    from runtime.config import describe
    keys = dict(epilog=f"config keys (dotted names are keys of [data], [time], ...) and defaults:\n{describe()}",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="one experiment from a config file", description=RUN_HELP, **keys)
    run.add_argument("config", metavar="CONFIG.toml", type=Path, help="experiment config (TOML)")
    run.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep = sub.add_parser("sweep", help="a grid of experiments on Dask", description=SWEEP_HELP, **keys)
    sweep.add_argument("config", metavar="CONFIG.toml", type=Path, help="config with a [sweep] table (TOML)")
    sweep.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (reused on a rerun)")
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, metavar="N",
                       help="worker processes of a local Dask cluster (default: the machine's cores)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of an existing Dask scheduler, e.g. tcp://HOST:8786 (dask scheduler / "
                            "dask worker, dask-jobqueue, Kubernetes); its workers need this package installed")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, (text, _) in JOBS.items():
        sub.add_parser(name, help=text, add_help=False)
    return top


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in JOBS:                 # their own parsers handle the rest, --help included
        import importlib
        return importlib.import_module(JOBS[argv[0]][1]).main(argv[1:]) or 0
    args = parser().parse_args(argv)
    try:
        return {"run": _run, "sweep": _sweep}[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; what finished is in {args.out}", file=sys.stderr)
        return 130


def _run(args):
    from runtime import config, run
    cfg = _config(args, lambda: config.load(args.config)[0])
    summary = run.run(cfg, args.out, progress=not args.quiet)
    gap = summary["largest_gap"]
    print(f"{summary['status']}: wrote {args.out}/error.png, curves.csv, summary.json"
          + (f"; largest |theory - SGD| = {gap['gap']:.4g} at t = {gap['t']:.4g}" if gap else ""))
    for message in summary["warnings"] + summary["errors"]:
        print(f"{PROG} run: {message}", file=sys.stderr)
    return 0 if summary["status"] == "done" else 1


def _sweep(args):
    from runtime import config, sweep
    base, grid = _config(args, lambda: config.load(args.config, sweep=True))
    if not grid:
        _usage_error(args, f"{args.config}: sweep: no [sweep] table; use `{PROG} run` for one point")
    try:
        summary = sweep.run(base, grid, args.out, workers=args.workers, scheduler=args.scheduler,
                            progress=not args.quiet)
    except OSError as exc:                           # no scheduler at that address, or it went away
        print(f"{PROG} sweep: error: Dask: {exc}; what finished is in {args.out}", file=sys.stderr)
        return 1
    counts = summary["counts"]
    print(f"{counts['done']} of {summary['points']} points done ({counts['skipped']} reused, "
          f"{counts['computed']} computed), {counts['failed']} failed; wrote {args.out}/results.parquet, "
          f"results.csv, summary.json, sweep.png")
    if summary["warnings"]:
        print(f"{PROG} sweep: {len(summary['warnings'])} point(s) with warnings, listed in summary.json", file=sys.stderr)
    for point in summary["failed"]:
        print(f"{PROG} sweep: point {point['hash']} {point['values']}: {'; '.join(point['errors'])}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def _config(args, load):
    """load() with a ConfigError (or an --out that is a file) as exit status 2, before anything is written."""
    from runtime.config import ConfigError
    try:
        loaded = load()
    except ConfigError as exc:
        _usage_error(args, str(exc))
    if args.out.exists() and not args.out.is_dir():
        _usage_error(args, f"--out: {args.out} is a file; expected a directory")
    return loaded


def _usage_error(args, message):
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _positive(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


if __name__ == "__main__":
    sys.exit(main())
