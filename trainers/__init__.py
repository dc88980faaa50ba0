"""Trainers (one file per method). Importing this package registers them."""
from . import coop, cocoop, zsclip

_MODULES = [coop, cocoop, zsclip]


def extend_cfg(cfg):
    """Add every trainer's TRAINER.<NAME> config group."""
    for module in _MODULES:
        module.extend_cfg(cfg)
