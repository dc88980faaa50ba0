"""Trainers (one file per method). Importing this package registers them."""
from . import coop, cocoop, zsclip
from . import coop_mt, linear_probe, softcpt
from . import dualviewmi, kgcoop
from . import prograd, plot, protonet

_MODULES = [coop, cocoop, zsclip, coop_mt, linear_probe, softcpt]
_MODULES += [dualviewmi, kgcoop]
_MODULES += [prograd, plot, protonet]


def extend_cfg(cfg):
    """Add every trainer's TRAINER.<NAME> config group."""
    for module in _MODULES:
        module.extend_cfg(cfg)
