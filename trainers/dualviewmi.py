"""DualViewMI: a soft view (CoOp context + class name) and a frozen
hand-crafted view of every class, tied by maximising their mutual
information (class-level InfoNCE), plus class-wise visual augmentation.

Loss = CE(soft logits, own task) + MI_WEIGHT * L_MI + AUG_WEIGHT * L_aug, with
L_MI over the classes the batch needs and L_aug the same CE on augmented
(same-class mixed) image features. Inference uses the soft prompts, or the
fused classifier normalise(a * t_soft + (1 - a) * t_hand).
"""
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError, check_choice

from .class_augment import AUG_MODES, ClassAugment
from .mi_estimators import MI_ESTIMATORS, MIEstimator
from .two_view import TwoViewCoOp, add_soft_prompt_keys

INFERENCE_MODES = ("soft", "fused")


def extend_cfg(cfg):
    cfg.TRAINER.DUALVIEWMI = c = CN()
    add_soft_prompt_keys(c)
    c.MI_ESTIMATOR = "infonce"  # infonce (cosine) | critic (learnable MLP head per view)
    c.MI_TEMPERATURE = 0.07  # InfoNCE temperature tau
    c.MI_WEIGHT = 1.0  # lambda_mi
    c.AUG = "mixup"  # none | mixup (same-class feature mixup) | prototype (class running means)
    c.AUG_WEIGHT = 0.5  # lambda_aug
    c.AUG_ALPHA = 1.0  # mixing coefficient ~ Beta(AUG_ALPHA, AUG_ALPHA)
    c.INFERENCE = "soft"  # soft | fused
    c.FUSE_WEIGHT = 0.5  # a in normalise(a * t_soft + (1 - a) * t_hand)


def fuse(soft, hand, weight):
    return F.normalize(weight * soft + (1.0 - weight) * hand, dim=-1)


@TRAINER_REGISTRY.register()
class DualViewMI(TwoViewCoOp):
    prec_key = "DUALVIEWMI"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        c = cfg.TRAINER.DUALVIEWMI
        for key, allowed in (("MI_ESTIMATOR", MI_ESTIMATORS), ("AUG", AUG_MODES),
                             ("INFERENCE", INFERENCE_MODES)):
            check_choice(f"TRAINER.DUALVIEWMI.{key}", c[key], allowed)
        for key in ("MI_TEMPERATURE", "AUG_ALPHA"):
            if not c[key] > 0:
                raise UserError(f"TRAINER.DUALVIEWMI.{key} must be > 0, got {c[key]}")
        for key in ("MI_WEIGHT", "AUG_WEIGHT"):
            if c[key] < 0:
                raise UserError(f"TRAINER.DUALVIEWMI.{key} must be >= 0, got {c[key]}")
        if not 0.0 <= c.FUSE_WEIGHT <= 1.0:
            raise UserError(f"TRAINER.DUALVIEWMI.FUSE_WEIGHT must be in [0, 1], "
                            f"got {c.FUSE_WEIGHT}")

    def build_model(self):
        super().build_model()
        c, dim = self.node, self.hand_text.shape[1]
        self.mi = MIEstimator(c.MI_ESTIMATOR, dim, c.MI_TEMPERATURE).to(self.device)
        if self.mi.learnable:
            self.register_trainable("mi_critic", self.mi)
        self.class_aug = ClassAugment(c.AUG, self.num_classes, dim, c.AUG_ALPHA).to(self.device)

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self.class_aug.train(mode == "train")  # augmentation only while training

    def training_state(self):
        # prototypes are running means outside the saved weights: keep them for --resume
        if self.class_aug.mode != "prototype":
            return None
        return {"class_prototypes": self.class_aug.prototypes.cpu(),
                "class_counts": self.class_aug.counts.cpu()}

    def load_training_state(self, state):
        if self.class_aug.mode == "prototype" and "class_prototypes" in state:
            self.class_aug.prototypes.copy_(state["class_prototypes"])
            self.class_aug.counts.copy_(state["class_counts"])

    def forward_train(self, image, label, task):
        c = self.node
        classes = self.batch_classes(task)
        soft = self.text_features(classes)
        feats = self.encode_image(image)
        ce, logits, target = self.task_loss(self.logit_scale * feats @ soft.t(), label, task,
                                            classes)
        mi = self.mi(soft, self.hand_text[classes])
        loss = ce + c.MI_WEIGHT * mi
        extra = {"ce": ce, "mi": mi}
        if self.class_aug.active:
            aug = self.class_aug(feats, label)
            aug_loss = self.task_loss(self.logit_scale * aug @ soft.t(), label, task, classes)[0]
            loss = loss + c.AUG_WEIGHT * aug_loss
            extra["aug"] = aug_loss
        return loss, logits, target, extra

    def class_text_features(self):
        soft = self.text_features()
        if self.node.INFERENCE == "fused":
            return fuse(soft, self.hand_text, self.node.FUSE_WEIGHT)
        return soft
