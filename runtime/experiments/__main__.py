"""python -m runtime.experiments [NAMES] --out DIR [--small]: run the experiments (all by
default) one after the other; each writes NAME.png, NAME.json, NAME.csv into DIR. A failing
experiment is reported and the others still run (exit status 1)."""
import os

# small dense linear algebra (root finding, eigenvalues) is slowed down, not sped up, by
# BLAS threads competing for a few cores; must be set before numpy is imported
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from runtime.experiments import EXPERIMENTS, load  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m runtime.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"experiments to run (default: all of {', '.join(EXPERIMENTS)})")
    parser.add_argument("--out", default="results/figures", help="output folder (default: results/figures)")
    parser.add_argument("--small", action="store_true", help="small sizes: a quick end-to-end check")
    args = parser.parse_args(argv)
    names = args.names or list(EXPERIMENTS)
    modules = [load(n) for n in names]          # unknown names fail before anything runs
    out = Path(args.out)
    failed = []
    start = time.perf_counter()
    for i, module in enumerate(modules, start=1):
        print(f"[{i}/{len(modules)}] {module.NAME}", file=sys.stderr, flush=True)
        tic = time.perf_counter()
        try:
            module.run(out, small=args.small)
        except Exception:                                           # report, run the others
            traceback.print_exc()
            failed.append(module.NAME)
            continue
        print(f"[{i}/{len(modules)}] {module.NAME}: {time.perf_counter() - tic:.1f} s -> "
              f"{out / module.NAME}.png, .json, .csv", file=sys.stderr, flush=True)
    print(f"{len(modules) - len(failed)} of {len(modules)} experiment(s) in {time.perf_counter() - start:.1f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
