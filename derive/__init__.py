"""The symbolic engine: activations (registry), Gaussian averages, learning rules, code generation.

`build(name)` derives a registered activation and returns its generated module without writing
a file (for trying out a new activation); `make derive` writes generated/NAME.py for all.
"""
import linecache
import types


def build(name):
    """Derive activation `name` and import the generated source as an in-memory module, with the
    learning rules' equations derived in memory too (every rule registered so far, built in or
    added by derive.rules.register_rule)."""
    from derive import activations, assembly, codegen

    rules_module = _in_memory("generated.rules", "<derived rules>", assembly.source())
    source = codegen.module_source(codegen.derive_all(activations.get(name)))
    return _in_memory(f"generated.{name}", f"<derived {name}>", source, _rules=rules_module)


def _in_memory(name, file, source, **namespace):
    """A module `name` executing `source` in memory, its globals starting with `namespace`; the source
    goes into linecache, so tracebacks and inspect.getsource show the generated lines."""
    linecache.cache[file] = (len(source), None, source.splitlines(keepends=True), file)
    module = types.ModuleType(name)
    module.__file__ = file
    module.__dict__.update(namespace)
    exec(compile(source, file, "exec"), module.__dict__)
    return module
