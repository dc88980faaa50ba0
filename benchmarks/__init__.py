"""Benchmarks of particular methods (``python tools/bench.py --mode NAME``).

tools/bench.py times any registered method by name (``--methods``); a comparison
that needs more than a training step (a solver against its loop, a cache against
the encoder in the loop, checkpointing on and off) lives here, one module a mode:

    MODE = "name"               # the --mode value
    HELP = "one line"           # shown in --help
    def add_arguments(parser)   # optional: extra flags (prefix them with the mode)
    def run(args)               # prints its table; args has bench.py's flags

Modules are found by name: adding one is adding its file.
"""
import importlib
import pkgutil


def modes():
    """{mode: module} of the benchmark modules of this package."""
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        mode = getattr(module, "MODE", None)
        if mode:
            out[mode] = module
    return out
