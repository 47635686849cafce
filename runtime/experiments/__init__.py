"""The paper's phenomena as experiments: one module per experiment, each with
`run(out, small=False) -> summary` writing NAME.png, NAME.json and NAME.csv into `out`
(`python -m runtime.experiments [NAMES] --out DIR`, `make figures`).

To add an experiment, write runtime/experiments/NAME.py with NAME, FULL / SMALL configs and
run(out, small), and add its name to EXPERIMENTS.
"""
import importlib

EXPERIMENTS = ("sequential", "truncated", "tied", "bias", "fluctuations", "plateaus")


def load(name):
    """The experiment module `name`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"runtime.experiments.{name}")
