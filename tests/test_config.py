"""Config files (runtime.config) and the command line's handling of them: every key, defaults,
the sweep grid, and every kind of bad value -> exit status 2, one message naming the key, nothing
written."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import cli, config

AE = Path(sys.executable).parent / "ae-dynamics"

#: the defaults as the README documents them
DEFAULTS = {
    "activation": "erf", "rule": "vanilla", "K": 2, "lr": 1.0, "init": 0.1, "seed": 0, "b0": None, "c0": None,
    "kappa": 0.0,
    "data": {"D": 500, "spikes": [2.0, 1.0], "bulk": 1.0, "dataset": None, "path": None, "patch": None,
             "samples": None},
    "time": {"t_max": 50.0, "points": 40},
    "theory": {"equations": "limit", "paths": 256},
    "simulation": {"seeds": 8},
}


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_an_empty_config_is_the_documented_defaults():
    assert config.parse({}) == (DEFAULTS, {})


@pytest.mark.parametrize("text, changed", CASES := [
    ('activation = "relu"', {"activation": "relu"}),
    ('rule = "truncated"', {"rule": "truncated"}),
    ('rule = "tied"\n[theory]\nequations = "finite"', {"rule": "tied", "theory.equations": "finite"}),
    ("K = 3", {"K": 3}),
    ("lr = 2", {"lr": 2.0}),                         # an integer where a number is expected
    ("lr = 0.25", {"lr": 0.25}),
    ("init = 0", {"init": 0.0}),
    ("seed = 7", {"seed": 7}),
    ("b0 = [0.3, -0.2]", {"b0": [0.3, -0.2]}),
    ("c0 = 0.5", {"c0": 0.5}),
    ("kappa = 0.01", {"kappa": 0.01}),
    ("[data]\nD = 100", {"data.D": 100}),
    ("data.D = 100", {"data.D": 100}),              # a dotted key is the same as its table
    ("[data]\nspikes = [4, 3, 2]", {"data.spikes": [4.0, 3.0, 2.0]}),
    ("[data]\nbulk = 0.5", {"data.bulk": 0.5}),
    ('[data]\ndataset = "sklearn"', {"data.dataset": "sklearn"}),
    ('[data]\ndataset = "npy"\npath = "x.npy"', {"data.dataset": "npy", "data.path": "x.npy"}),
    ('[data]\ndataset = "sklearn"\npatch = 8', {"data.dataset": "sklearn", "data.patch": 8}),
    ('[data]\ndataset = "mnist"\npath = "m"\nsamples = 1000',
     {"data.dataset": "mnist", "data.path": "m", "data.samples": 1000}),
    ("[time]\nt_max = 5", {"time.t_max": 5.0}),
    ("[time]\npoints = 3", {"time.points": 3}),
    ('[theory]\nequations = "fluctuations"', {"theory.equations": "fluctuations"}),
    ('[theory]\nequations = "stochastic"\npaths = 64', {"theory.equations": "stochastic", "theory.paths": 64}),
    ('rule = "tied"\n[theory]\nequations = "stochastic"', {"rule": "tied", "theory.equations": "stochastic"}),
    ('[theory]\nequations = "samples"\npaths = 8', {"theory.equations": "samples", "theory.paths": 8}),
    ("[simulation]\nseeds = 0", {"simulation.seeds": 0}),
])
def test_every_key_is_read(tmp_path, text, changed):
    expected = copy.deepcopy(DEFAULTS)
    for key, value in changed.items():
        config.set_value(expected, key, value)
    cfg, grid = config.load(write(tmp_path, text))
    assert cfg == expected and grid == {}
    assert all(type(config.get(cfg, k)) is type(v) for k, v in changed.items())


def test_every_key_of_the_schema_is_tested_and_documented():
    assert {k for _, changed in CASES for k in changed} == set(config.SCHEMA) == set(_keys(DEFAULTS))


def _keys(d, prefix=""):
    for k, v in d.items():
        yield from (_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])


BAD = [
    ("speed = 3", "'speed'", "known keys"),
    ("[data]\nDim = 3", "'data.Dim'", "known keys"),
    ("[plot]\nx = 1", "[plot]", "known tables"),
    ('activation = "swish"', "activation", "one of"),
    ("activation = 3", "activation", "a string"),
    ('rule = "hebb"', "rule", "one of"),
    ("K = 0", "K", ">= 1"),
    ("K = 2.0", "K", "an integer"),
    ('K = "2"', "K", "an integer"),
    ("K = true", "K", "an integer"),
    ("lr = 0", "lr", "> 0"),
    ("lr = -1.0", "lr", "> 0"),
    ("lr = nan", "lr", "finite"),
    ("lr = inf", "lr", "finite"),
    ('lr = "fast"', "lr", "a number"),
    ("init = -0.1", "init", ">= 0"),
    ("seed = -1", "seed", ">= 0"),
    ("seed = 1.5", "seed", "an integer"),
    ("b0 = 0.3", "b0", "list of numbers"),
    ("b0 = []", "b0", "list of numbers"),
    ('b0 = [0.3, "x"]', "b0[1]", "a number"),
    ("b0 = [0.3]", "b0", "K = 2 numbers"),
    ('b0 = [0.3, 0.1]\nrule = "truncated"', "b0", "rule = 'vanilla'"),
    ('c0 = 0.1\nrule = "tied"', "c0", "rule = 'vanilla'"),
    ("kappa = -0.1", "kappa", ">= 0"),
    ("[data]\nD = 0", "data.D", ">= 1"),
    ("[data]\nD = 1\nspikes = [1, 2]", "data.spikes", "at most D = 1"),
    ("K = 5\n[data]\nD = 4\nspikes = [1.0]", "K", "at most D = 4"),
    ("[data]\nspikes = [2, 0]", "data.spikes[1]", "> 0"),
    ("[data]\nspikes = 2", "data.spikes", "list of numbers"),
    ("[data]\nbulk = 0", "data.bulk", "> 0"),
    ('[data]\ndataset = "imagenet"', "data.dataset", "one of"),
    ('[data]\ndataset = "cifar10"', "data.path", "needs a path"),
    ('[data]\ndataset = "sklearn"\npath = "x"', "data.path", "take no path"),
    ('[data]\ndataset = "npy"\npath = "x"\npatch = 4', "data.patch", "only for data.dataset = 'sklearn'"),
    ('[data]\npath = "x"', "data.path", "only used with data.dataset"),
    ('[data]\ndataset = "sklearn"\nD = 100', "data.D", "not used with data.dataset"),
    ('[data]\ndataset = "sklearn"\nspikes = [1.0]', "data.spikes", "not used with data.dataset"),
    ('[data]\ndataset = "sklearn"\nsamples = 1', "data.samples", ">= 2"),
    ("[time]\nt_max = 0", "time.t_max", "> 0"),
    ("[time]\npoints = 0", "time.points", ">= 1"),
    ('[theory]\nequations = "exact"', "theory.equations", "one of"),
    ('rule = "tied"', "theory.equations", "expected 'finite'"),
    ('rule = "tied"\n[theory]\nequations = "fluctuations"', "theory.equations", "expected 'finite'"),
    ('[theory]\npaths = 1', "theory.paths", ">= 2"),
    ('K = 4\n[theory]\nequations = "finite"', "theory.equations", "K <= 3"),
    ("[simulation]\nseeds = -1", "simulation.seeds", ">= 0"),
    ("K = ", "not valid TOML", ""),
]


@pytest.mark.parametrize("text, key, expected", BAD)
def test_bad_values_name_the_key(tmp_path, text, key, expected):
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, text))
    message = str(info.value)
    assert key in message and expected in message, message


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("text, key, expected", BAD[::4])
def test_bad_config_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys, command, text, key, expected):
    if command == "sweep":
        text += "\n[sweep]\nseed = [0, 1]\n"
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        cli.main([command, str(write(tmp_path, text)), "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and expected in err, err
    assert not out.exists()


def test_the_console_script_exits_2_on_a_bad_config(tmp_path):
    """The installed entry point, not just cli.main."""
    out = tmp_path / "out"
    proc = subprocess.run([str(AE), "run", str(write(tmp_path, "lr = -1")), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "lr: expected a number > 0, got -1" in proc.stderr
    assert not out.exists()


def test_missing_file_and_out_that_is_a_file(tmp_path, capsys):
    for args, expected in [(["run", str(tmp_path / "none.toml")], "no such config file"),
                           (["run", str(write(tmp_path, "K = 1"))], "is a file")]:
        with pytest.raises(SystemExit) as info:
            cli.main([*args, "--out", str(write(tmp_path, "", "file.txt"))])
        assert info.value.code == 2 and expected in capsys.readouterr().err


# -- numbers: hypothesis over the numeric keys -----------------------------------------------------

NUMERIC = {k: s for k, s in config.SCHEMA.items() if s.kind in ("int", "float") and k not in ("data.samples", "data.patch")}


def _valid(spec, value):
    return spec.minimum is None or (value > spec.minimum if spec.strict else value >= spec.minimum)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(key=st.sampled_from(sorted(NUMERIC)),
       value=st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_numeric_keys_accept_exactly_their_range(key, value):
    spec = config.SCHEMA[key]
    ok_type = not isinstance(value, bool) and (isinstance(value, int) or (spec.kind == "float" and isinstance(value, float)))
    ok = ok_type and value == value and abs(value) != float("inf") and _valid(spec, value)
    raw = {"K": 1, "data": {"D": 10**6, "spikes": [1.0]}}      # any K and D of the range are possible
    config.set_value(raw, key, value)
    if ok:
        assert config.get(config.parse(raw)[0], key) == value
    else:
        with pytest.raises(config.ConfigError, match=f"^{key.replace('.', '[.]')}"):
            config.parse(raw)


# -- the sweep grid ------------------------------------------------------------------------------

def test_sweep_grid_is_the_cartesian_product_in_order(tmp_path):
    text = 'K = 2\n[sweep]\nlr = [0.25, 0.5, 1]\nK = [1, 2]\n"data.D" = [250, 500]\n'
    base, grid = config.load(write(tmp_path, text), sweep=True)
    assert grid == {"lr": [0.25, 0.5, 1.0], "K": [1, 2], "data.D": [250, 500]}
    points = config.expand(base, grid)
    assert len(points) == 12
    assert [(p["lr"], p["K"], p["data"]["D"]) for p in points[:3]] == [(0.25, 1, 250), (0.25, 1, 500), (0.25, 2, 250)]
    assert all(p["time"] == DEFAULTS["time"] for p in points)


def test_sweep_dotted_keys_in_both_spellings(tmp_path):
    a = config.load(write(tmp_path, '[sweep]\n"data.D" = [10, 20]'), sweep=True)
    b = config.load(write(tmp_path, "[sweep]\ndata.D = [10, 20]", "b.toml"), sweep=True)
    c = config.load(write(tmp_path, "[sweep.data]\nD = [10, 20]", "c.toml"), sweep=True)
    assert a == b == c and a[1] == {"data.D": [10, 20]}


@pytest.mark.parametrize("text, expected", [
    ("[sweep]\nspeed = [1, 2]", "sweep.speed: unknown key"),
    ("[sweep]\nlr = 1.0", "sweep.lr: expected a non-empty list"),
    ("[sweep]\nlr = []", "sweep.lr: expected a non-empty list"),
    ("[sweep]\nlr = [1.0, -1.0]", "sweep.lr[1]: lr: expected a number > 0"),
    ("[sweep]\nlr = [1, 1.0]", "sweep.lr: expected distinct values"),
    ("[sweep]\nK = [1, 2, 3]\n[theory]\nequations = 'finite'\n", "no"),            # fine: K <= 3
    ("b0 = [0.1, 0.2]\n[sweep]\nK = [1, 2]", "b0: expected K = 1 numbers, got 2 (in the sweep point K = 1)"),
    ("[sweep]\nK = [2, 4]\n[theory]\nequations = 'finite'\n", "K <= 3"),
    ("[sweep]\n", "sweep: expected at least one key"),
])
def test_sweep_bad_grids(tmp_path, text, expected):
    path = write(tmp_path, text)
    if expected == "no":
        assert len(config.expand(*config.load(path, sweep=True))) == 3
        return
    with pytest.raises(config.ConfigError) as info:
        config.load(path, sweep=True)
    assert expected in str(info.value)


def test_run_refuses_a_sweep_and_sweep_needs_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", str(write(tmp_path, "[sweep]\nK = [1, 2]")), "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "only for `ae-dynamics sweep`" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", str(write(tmp_path, "K = 1", "p.toml")), "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "no [sweep] table" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, expected", [
    (["--help"], "sweep"),
    (["run", "--help"], "summary.json"),
    (["sweep", "--help"], "--scheduler ADDRESS"),
    (["sweep", "--help"], "simulation.seeds = 8"),
    (["derive", "--help"], "generated/NAME.py"),
    (["figures", "--help"], "--small"),
    (["universality", "--help"], "--data KIND"),
])
def test_every_subcommand_explains_itself(capsys, monkeypatch, args, expected):
    monkeypatch.setenv("PYTHONHASHSEED", "0")            # else `derive` re-executes itself with it
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 0 and expected in capsys.readouterr().out


@pytest.mark.parametrize("args", [["sweep", "c.toml", "--out", "o", "--workers", "0"],
                                  ["sweep", "c.toml", "--out", "o", "--workers", "2", "--scheduler", "tcp://x:1"],
                                  ["run", "c.toml"], ["fly"]])
def test_bad_usage_exits_2(capsys, args):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2


def test_the_shipped_configs_are_valid():
    root = Path(__file__).resolve().parent.parent
    demo, grid = config.load(root / "configs" / "demo.toml")
    assert grid == {} and demo["K"] == 4 and demo["data"]["D"] == 1000
    base, grid = config.load(root / "configs" / "sweep.toml", sweep=True)
    assert len(config.expand(base, grid)) == 12


def test_finite_equations_take_any_K_for_a_polynomial_activation():
    cfg, _ = config.parse({"activation": "linear", "K": 4, "theory": {"equations": "finite"}})
    assert cfg["K"] == 4
