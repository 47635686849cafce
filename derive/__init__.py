"""The symbolic engine: activations (registry), Gaussian averages, learning rules, code generation.

`build(name)` derives a registered activation and returns its generated module without writing
a file (for trying out a new activation); `make derive` writes generated/NAME.py for all.
"""
import types


def build(name):
    """Derive activation `name` and import the generated source as an in-memory module."""
    from derive import activations, codegen

    source = codegen.module_source(codegen.derive_all(activations.get(name)))
    module = types.ModuleType(f"generated.{name}")
    module.__file__ = f"<derived {name}>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module
