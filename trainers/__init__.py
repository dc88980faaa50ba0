"""Trainers (one file per method). Importing this package registers them."""
from . import coop, cocoop, zsclip
from . import coop_mt, linear_probe, softcpt
from . import dualviewmi, kgcoop
from . import ivlp, maple, promptsrc  # prompts in both towers (issue 20)

_MODULES = [coop, cocoop, zsclip, coop_mt, linear_probe, softcpt]
_MODULES += [dualviewmi, kgcoop]
_MODULES += [ivlp, maple, promptsrc]


def extend_cfg(cfg):
    """Add every trainer's TRAINER.<NAME> config group."""
    for module in _MODULES:
        module.extend_cfg(cfg)
