"""KgCoOp (Yao et al., CVPR 2023): CoOp plus a penalty keeping each class's
soft-prompt feature close to its hand-crafted feature; here also the
ablation of DualViewMI's mutual-information term."""
import re

from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.errors import UserError

from .feature_cache import accepts_features
from .two_view import TwoViewCoOp, add_soft_prompt_keys


def extend_cfg(cfg):
    cfg.TRAINER.KGCOOP = CN()
    add_soft_prompt_keys(cfg.TRAINER.KGCOOP)
    cfg.TRAINER.KGCOOP.W = 8.0  # weight of the knowledge-guided term


def knowledge_distance(soft, hand):
    """Mean over classes of 1 - cos(soft, hand) for row-aligned normalised features."""
    return (1.0 - (soft.float() * hand.float()).sum(dim=-1)).mean()


@TRAINER_REGISTRY.register()
class KgCoOp(TwoViewCoOp):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "KGCOOP"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.KGCOOP.W < 0:
            raise UserError(f"TRAINER.KGCOOP.W must be >= 0, got {cfg.TRAINER.KGCOOP.W}")

    @accepts_features
    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        soft = self.text_features(classes)
        logits = self.logit_scale * self.image_features(image) @ soft.t()
        ce, logits, target = self.task_loss(logits, label, task, classes)
        kg = knowledge_distance(soft, self.hand_text[classes])
        return ce + self.node.W * kg, logits, target, {"ce": ce, "kg": kg}


@register_method
class KgCoOpMethod(Method):
    name, trainer, label, colour, order = "kgcoop", "KgCoOp", "KgCoOp", "orange", 30
    default_variant = "w8"
    variant_help = "w<W>: the weight of the knowledge-guided term, e.g. w8"
    script_args = ("W",)
    script_usage = "[W]: the weight of the knowledge-guided term (default 8)"
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = ("ep10_batch4", "ep10")

    def parse_variant(self, variant):
        variant = variant or self.default_variant
        if not re.fullmatch(r"w\d+(\.\d+)?", variant):
            raise UserError(f"unknown variant '{variant}' of method kgcoop; use "
                            f"{self.variant_help}")
        return variant

    def variant_from_args(self, args):
        """scripts/main.sh kgcoop DATASET SHOTS [BACKBONE] [W]: W a number (or w<W>)."""
        variant = super().variant_from_args(args)
        if not re.fullmatch(r"w?\d+(\.\d+)?", variant):
            raise UserError(f"W must be a non-negative number, got '{variant}'")
        return variant if variant.startswith("w") else f"w{variant}"

    def setting(self, ctx, variant):
        return Setting(self.trainer, self.schedule(ctx, "ep10_batch4"), variant,
                       ["TRAINER.KGCOOP.W", str(float(variant[1:]))])
