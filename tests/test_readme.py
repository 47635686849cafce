"""The README's worked example of adding an activation runs, and its result is right."""
import inspect
import re
from pathlib import Path

import numpy as np

from derive import activations

README = Path(__file__).resolve().parent.parent / "README.md"


def test_adding_an_activation_example(capsys):
    section = README.read_text().split("## Adding an activation", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    try:
        exec(compile(code, "README example", "exec"), namespace)
    finally:
        activations.REGISTRY.pop("erf_unit", None)
    module = namespace["erf_unit"]
    assert module.CLOSED_FORM
    # like a module on disk, its source is there to read (inspect, tracebacks)
    assert "def pair_0_0" in inspect.getsource(module.pair_0_0)
    # Williams (1998): E[erf(x1) erf(x2)] = (2/pi) asin(2 C12 / sqrt((1 + 2 C11)(1 + 2 C22)))
    C = np.array([[1.0, 0.5], [0.5, 2.0]])
    expected = 2 / np.pi * np.arcsin(2 * 0.5 / np.sqrt(3.0 * 5.0))
    assert abs(module.I2(C) - expected) < 1e-14
    assert f"{expected:.10f}"[:10] in capsys.readouterr().out
    # the equations integrated with the built module follow SGD run with it: within the seed spread
    # (the larger of the measured one and the one the fluctuation equations predict) at t = 1, 2, 3
    sol, sim = namespace["sol"], namespace["sim"]
    assert sol.status == 0 and sim.status == 0
    assert abs(sol.error[0] - sim.mean()[0]) <= 1e-10 * sol.error[0]      # the same initial state
    gap, spread = namespace["gap"][1:], namespace["spread"][1:]
    assert np.all(gap <= spread), gap / spread
    assert sol.error[0] - sol.error[-1] > 10 * spread.max()      # while the error falls by far more


def _block(section, language):
    text = README.read_text().split(section, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", text, re.S).group(1)


def test_the_python_api_screen_runs():
    namespace = {}
    exec(compile(_block("## The Python API in one screen", "python"), "README API", "exec"), namespace)
    assert namespace["sol"].status == 0 and namespace["sol"].error.shape == (3,)
    assert namespace["sim"].error.shape == (4, 3)


def test_the_config_example_documents_every_key_and_its_default():
    import tomllib

    from runtime import config
    block = _block("## Config files (TOML)", "toml")
    base, grid = config.parse(tomllib.loads(block), sweep=True)
    assert base == config.defaults()                  # the keys written out are the defaults
    assert grid == {"lr": [0.25, 0.5, 1.0], "K": [1, 2], "data.D": [250, 500]}
    commented = re.findall(r"^# (\w+) = ", block, re.M)
    documented = set(re.findall(r"^(\w+) = ", block.split("[sweep]")[0], re.M)) | set(commented)
    assert {key.split(".")[-1] for key in config.SCHEMA} == documented


def test_adding_a_learning_rule_example(capsys):
    """The README's rule (vanilla with decay on the decoder only): registered, derived in memory,
    integrated with fluctuations and simulated with the same update, they agree within the seed
    spread; the decay changes the run by more than that."""
    from derive import assembly, rules
    assembly.table()            # the rules derived before the registration, as after an earlier build
    namespace = {}
    try:
        exec(compile(_block("## Adding a learning rule", "python"), "README rule", "exec"), namespace)
    finally:
        rules.RULES.pop("decoder_decay", None)
    sol, sim = namespace["sol"], namespace["sim"]
    spread = np.maximum(sim.std(), sol.error_spread)[1:]
    assert np.all(np.abs(sol.error - sim.mean())[1:] <= 2 * spread)
    assert "decoder_decay" in namespace["erf"].RULES_MODULE.RULES
    plain = namespace["erf"].integrate(namespace["eigvals"], namespace["eigvecs"], namespace["W0"], namespace["V0"],
                                       lr=0.5, times=[0, 1, 2, 4], fluctuations=True, progress=False)
    assert np.max(np.abs(plain.error - sim.mean())[1:] / spread) > 5
