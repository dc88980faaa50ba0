from ..errors import UserError
from ..utils.registry import Registry

TRAINER_REGISTRY = Registry("TRAINER")


def build_trainer(cfg):
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    views = cfg.get("FEATURE_CACHE", {}).get("TRAIN_VIEWS", 0)
    if views and not hasattr(cls, "trains_on_features"):
        # a trainer outside trainers/base.py (e.g. ported from Dassl) reads images itself
        raise UserError(f"FEATURE_CACHE.TRAIN_VIEWS {views}: trainer {cfg.TRAINER.NAME} trains on "
                        "images itself; set FEATURE_CACHE.TRAIN_VIEWS 0")
    return cls(cfg)
