"""KgCoOp (Yao et al., CVPR 2023): CoOp plus a penalty keeping each class's
soft-prompt feature close to its hand-crafted feature; here also the
ablation of DualViewMI's mutual-information term."""
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
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
