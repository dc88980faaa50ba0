"""Trainers (one file per method). Importing this package registers them.

Every module of this package is imported: a trainer file registers its trainer
(``@TRAINER_REGISTRY.register()``), its method declaration (``@register_method``,
toolbox/methods.py) and, with a module-level ``extend_cfg(cfg)``, its config group
(TRAINER.<NAME>). Adding a method is adding its file: nothing here names one.
"""
import importlib
import pkgutil
import warnings

with warnings.catch_warnings():  # openai-clip imports the deprecated pkg_resources
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    _MODULES = [importlib.import_module(f"{__name__}.{info.name}")
                for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
                if not info.name.startswith("_")]


def extend_cfg(cfg):
    """Add every trainer's TRAINER.<NAME> config group."""
    for module in _MODULES:
        if callable(getattr(module, "extend_cfg", None)):
            module.extend_cfg(cfg)
