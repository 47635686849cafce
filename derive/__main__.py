"""python -m derive [NAME ...]: derive activations and write generated/NAME.py.

With no name, derives every registered activation and rewrites generated/__init__.py and
generated/rules.py (every rule's equations, shared by all activations: derive/assembly.py).
Prints, for each activation, which kernels are closed forms (and the formulas) or numerical.
"""
import argparse
import os
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "generated"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("PYTHONHASHSEED") != "0":
        # SymPy's simplifications iterate over sets: fix the hash seed for byte-identical output
        env = dict(os.environ, PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, "-m", "derive", *argv], env)
    from derive import activations, assembly, codegen

    parser = argparse.ArgumentParser(prog="python -m derive", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="activations (default: all registered)")
    parser.add_argument("--quiet", action="store_true", help="print one line per activation")
    args = parser.parse_args(argv)
    names = args.names or sorted(activations.REGISTRY)
    try:
        chosen = [activations.get(n) for n in names]
    except ValueError as err:
        parser.error(str(err))
    OUT.mkdir(exist_ok=True)
    if not args.names:
        (OUT / "rules.py").write_text(assembly.source())
        print("rules: every rule's equations -> generated/rules.py", flush=True)
    for act in chosen:
        d = codegen.derive_all(act)
        (OUT / f"{act.name}.py").write_text(codegen.module_source(d))
        kind = "closed form" if d.closed_form else f"numerical kernels: {', '.join(d.numeric)}"
        print(f"{act.name}: {kind} -> generated/{act.name}.py", flush=True)
        if not args.quiet:
            for kernel, expr in d.kernels.items():
                print(f"    {kernel.name:10s} = {expr if expr is not None else '(numerical quadrature)'}")
            for name, (_, formula) in d.literature.items():
                print(f"    {name:10s} = {formula}")
    if not args.names:
        (OUT / "__init__.py").write_text(codegen.package_init(activations.REGISTRY))


if __name__ == "__main__":
    main()
