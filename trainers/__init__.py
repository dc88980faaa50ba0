"""Trainers (one file per method). Importing this package registers them."""
from . import coop, cocoop, zsclip
from . import coop_mt, linear_probe, softcpt
from . import dualviewmi, kgcoop

_MODULES = [coop, cocoop, zsclip, coop_mt, linear_probe, softcpt]
_MODULES += [dualviewmi, kgcoop]


def extend_cfg(cfg):
    """Add every trainer's TRAINER.<NAME> config group."""
    for module in _MODULES:
        module.extend_cfg(cfg)

# issue 21 (until the package auto-discovers trainer modules)
from . import clip_lora, mcoop, tip_adapter  # noqa: E402

_MODULES += [clip_lora, mcoop, tip_adapter]
