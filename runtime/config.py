"""Experiment configs in TOML: parse, fill in defaults, validate, expand a sweep's grid.

A config is a nested dict with every key present (defaults filled in, absent optional keys as
None): the "full config" that `run` echoes and whose hash names a sweep point. Keys are
addressed by dotted names ("K", "data.D"). Anything wrong raises ConfigError (a ValueError)
whose message names the key and says what was expected.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import generated
from runtime import data, quadrature, schedules

RULES = ("vanilla", "truncated", "tied")
EQUATIONS = ("limit", "finite", "fluctuations", "stochastic", "samples")
SECTIONS = ("data", "time", "theory", "simulation")


class ConfigError(ValueError):
    """A config that cannot be run: the message names the key and what was expected."""


@dataclass(frozen=True)
class Key:
    """One config key: its type ("str", "int", "float", "floats"), default (None: optional),
    lower bound, allowed choices, and the help text `--help` lists (runtime.cli)."""
    kind: str
    default: object
    help: str
    minimum: float | None = None
    strict: bool = False                 # minimum excluded (value > minimum)
    choices: tuple | None = None


SCHEMA = {
    "activation": Key("str", "erf", "a module of generated/", choices=generated.ACTIVATIONS),
    "rule": Key("str", "vanilla", "learning rule", choices=RULES),
    "K": Key("int", 2, "hidden units", minimum=1),
    "lr": Key("float", 1.0, "learning rate, or a schedule: {schedule = \"cosine\", lr = 1.0, t_max = 50} "
              "(constant | inverse_time: lr, t0 | cosine: lr, t_max, lr_min)", minimum=0, strict=True),
    "init": Key("float", 0.1, "W0, V0 ~ init * N(0, 1), drawn from `seed`", minimum=0),
    "seed": Key("int", 0, "seed of the initial weights (and of the data set's patches and split)", minimum=0),
    "b0": Key("floats", None, "initial trained encoder bias, K numbers (rule vanilla)"),
    "c0": Key("float", None, "initial trained output bias, the same number in every coordinate (rule vanilla)"),
    "kappa": Key("float", 0.0, "weight decay of both layers: w, v -= (lr kappa/D) w, v per step", minimum=0),
    "data.D": Key("int", 500, "input dimension of the spiked model", minimum=1),
    "data.spikes": Key("floats", [2.0, 1.0], "spike eigenvalues s_i * D over the bulk", minimum=0, strict=True),
    "data.bulk": Key("float", 1.0, "eigenvalue of the D - M bulk directions", minimum=0, strict=True),
    "data.dataset": Key("str", None, "a data set instead of the spiked model", choices=data.KINDS),
    "data.path": Key("str", None, "file or directory of the data set (cifar10, mnist, npy)"),
    "data.patch": Key("int", None, "side of the sklearn patches (D = patch^2, default 32)", minimum=1),
    "data.samples": Key("int", None, "cap on the data set's training rows", minimum=2),
    "time.t_max": Key("float", 50.0, "last time (t = steps / D)", minimum=0, strict=True),
    "time.points": Key("int", 40, "log-spaced times, plus t = 0", minimum=1),
    "theory.equations": Key("str", "limit", "which equations of motion", choices=EQUATIONS),
    "theory.paths": Key("int", 256, "sample paths (equations = 'stochastic': the diffusion approximation; 'samples': SGD stepped per sample in a reduced space)", minimum=2),
    "simulation.seeds": Key("int", 8, "SGD seeds 0 .. seeds-1 (0: theory only)", minimum=0),
}

#: keys that describe the spiked model, meaningless with a data set
SPIKED = ("data.D", "data.spikes", "data.bulk")


def describe():
    """Every key with its default and meaning, one line each (for --help)."""
    def shown(spec):
        return "(optional)" if spec.default is None else repr(spec.default)
    width = max(len(k) for k in SCHEMA)
    return "\n".join(f"  {key:<{width}} = {shown(spec):<12} {spec.help}"
                     + (f": {' | '.join(spec.choices)}" if spec.choices else "") for key, spec in SCHEMA.items())


def load(path, sweep=False):
    """(base config, grid) from a TOML file. grid: {dotted key: [values]} from [sweep] (empty
    dict if there is none); a [sweep] table is an error unless sweep=True."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse(raw, sweep)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse(raw, sweep=False):
    """(base config, grid) from a parsed TOML document (a dict); see `load`."""
    raw = dict(raw)
    grid = _grid(raw.pop("sweep", None), sweep)
    values = _flatten(raw, "")
    cfg = defaults()
    for key, value in values.items():
        set_value(cfg, key, check_value(key, value))
    given = set(values) | set(grid)
    for point, combo in zip(expand(cfg, grid), itertools.product(*grid.values())):
        try:
            check_point(point, given)
        except ConfigError as exc:
            where = ", ".join(f"{k} = {v!r}" for k, v in zip(grid, combo))
            raise ConfigError(f"{exc}" + (f" (in the sweep point {where})" if where else "")) from None
    return cfg, grid


def defaults():
    """The full config with every key at its default."""
    cfg = {}
    for key, spec in SCHEMA.items():
        set_value(cfg, key, copy.deepcopy(spec.default))
    return cfg


def digest(cfg):
    """16 hex digits of the sha256 of a full config (canonical JSON): the name of a sweep point."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def get(cfg, key):
    """cfg["data"]["D"] for key "data.D"."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def set_value(cfg, key, value):
    """Set the dotted key in a nested dict (creating its section)."""
    *sections, name = key.split(".")
    for part in sections:
        cfg = cfg.setdefault(part, {})
    cfg[name] = value


def expand(base, grid):
    """The grid's points in a fixed order (the cartesian product of the [sweep] lists, the last
    key varying fastest): one full config each."""
    points = []
    for combo in itertools.product(*grid.values()):
        cfg = copy.deepcopy(base)
        for key, value in zip(grid, combo):
            set_value(cfg, key, copy.deepcopy(value))
        points.append(cfg)
    return points


def check_value(key, value):
    """The value of one key, checked against SCHEMA (ints accepted as floats)."""
    if key not in SCHEMA:
        raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(SCHEMA)}")
    spec = SCHEMA[key]
    if key == "lr" and isinstance(value, dict):
        return _lr_schedule(value)
    if spec.kind == "floats":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{key}: expected a non-empty list of numbers, got {value!r}")
        return [_number(v, "float", spec, f"{key}[{i}]") for i, v in enumerate(value)]
    return _number(value, spec.kind, spec, key)


def check_point(cfg, given=()):
    """Checks across keys of one full config; `given`: the keys set in the file (or swept)."""
    K, rule = cfg["K"], cfg["rule"]
    dataset, equations = cfg["data"]["dataset"], cfg["theory"]["equations"]
    if cfg["b0"] is not None:
        if len(cfg["b0"]) != K:
            raise ConfigError(f"b0: expected K = {K} numbers, got {len(cfg['b0'])}")
        if rule != "vanilla":
            raise ConfigError(f"b0: a trained bias needs rule = 'vanilla', got rule = {rule!r}")
    if cfg["c0"] is not None and rule != "vanilla":
        raise ConfigError(f"c0: a trained output bias needs rule = 'vanilla', got rule = {rule!r}")
    if rule == "tied" and equations not in ("finite", "stochastic", "samples"):
        raise ConfigError(f"theory.equations: rule 'tied' has no D -> infinity limit and no fluctuation expansion; "
                          f"expected 'finite', 'stochastic' or 'samples' (both step SGD per sample), got {equations!r}")
    if equations != "limit" and K > quadrature.MAX_UNITS and generated.load(cfg["activation"]).POLYNOMIAL_DEGREE is None:
        raise ConfigError(f"theory.equations: {equations!r} equations need K <= {quadrature.MAX_UNITS} "
                          f"for activation {cfg['activation']!r} unless g is a polynomial (got K = {K}); expected 'limit'")
    if dataset is None:
        for key in ("data.path", "data.patch", "data.samples"):
            if get(cfg, key) is not None:
                raise ConfigError(f"{key}: only used with data.dataset; set data.dataset or remove {key}")
        D, spikes = cfg["data"]["D"], cfg["data"]["spikes"]
        if len(spikes) > D:
            raise ConfigError(f"data.spikes: expected at most D = {D} spikes, got {len(spikes)}")
        if K > D:
            raise ConfigError(f"K: expected at most D = {D} hidden units, got {K}")
        return
    for key in SPIKED:
        if key in given:
            raise ConfigError(f"{key}: describes the spiked model, not used with data.dataset = {dataset!r}; "
                              f"remove it")
    if dataset == "sklearn":
        if cfg["data"]["path"] is not None:
            raise ConfigError("data.path: the sklearn patches take no path; remove it")
    else:
        if cfg["data"]["path"] is None:
            raise ConfigError(f"data.path: data set {dataset!r} needs a path (expected a file or directory)")
        if cfg["data"]["patch"] is not None:
            raise ConfigError(f"data.patch: only for data.dataset = 'sklearn', got {dataset!r}")


def _number(value, kind, spec, where):
    if isinstance(value, bool) or (kind == "str") != isinstance(value, str):
        raise ConfigError(f"{where}: expected {_expected(spec)}, got {value!r}")
    if kind == "str":
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, spec.choices))}, got {value!r}")
        return value
    if kind == "int" and not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if spec.minimum is not None and (value <= spec.minimum if spec.strict else value < spec.minimum):
        raise ConfigError(f"{where}: expected a number {'>' if spec.strict else '>='} {spec.minimum:g}, "
                          f"got {value!r}")
    return float(value) if kind == "float" else value


def _lr_schedule(value):
    """lr = {schedule = "cosine", lr = 1.0, t_max = 50} (runtime.schedules), kept in its full config
    form (every parameter, numbers as floats): what integrate and simulate take."""
    try:
        return schedules.schedule(value).config()
    except ValueError as exc:
        raise ConfigError(f"lr: {exc}") from None


def _expected(spec):
    return {"str": "a string", "int": "an integer", "float": "a number", "floats": "a number"}[spec.kind] + \
        (f" (one of {', '.join(map(repr, spec.choices))})" if spec.choices else "")


def _flatten(raw, prefix):
    """{"data": {"D": 5}} -> {"data.D": 5}; tables only where SECTIONS allow them."""
    out = {}
    for name, value in raw.items():
        key = prefix + name
        if isinstance(value, dict) and key != "lr":           # lr = {schedule = ...}: a learning-rate schedule
            if prefix or name not in SECTIONS:
                raise ConfigError(f"unknown table [{key}]; known tables: "
                                  f"{', '.join(f'[{s}]' for s in SECTIONS)} and [sweep]")
            out.update(_flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _grid(raw, allowed):
    """{dotted key: [checked values]} from the [sweep] table."""
    if raw is None:
        return {}
    if not allowed:
        raise ConfigError("sweep: a [sweep] table is only for `ae-dynamics sweep`; remove it to `run` one point")
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep: expected a table of lists, got {raw!r}")
    flat = {}
    for name, value in raw.items():
        if isinstance(value, dict) and name in SECTIONS:        # [sweep] data.D = [...] (a dotted key)
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    if not flat:
        raise ConfigError("sweep: expected at least one key with a list of values")
    grid = {}
    for key, values in flat.items():
        if key not in SCHEMA:
            raise ConfigError(f"sweep.{key}: unknown key; known keys: {', '.join(SCHEMA)}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values, got {values!r}")
        checked = []
        for i, value in enumerate(values):
            try:
                checked.append(check_value(key, value))
            except ConfigError as exc:
                raise ConfigError(f"sweep.{key}[{i}]: {exc}") from None
        if len({repr(v) for v in checked}) < len(checked):
            raise ConfigError(f"sweep.{key}: expected distinct values, got {values!r}")
        grid[key] = checked
    return grid
