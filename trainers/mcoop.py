"""MCoOp, the CoOp prompt of MVLPT (Shen et al., WACV 2024): one context shared by every
class of every source task, the class token in the middle of the context, trained with
cross-entropy over the union of all tasks' classes (upstream's default) or, as a config
key, per sample over its own task's classes. The learnt prompt then initialises target
tasks (MODEL.INIT_FROM, trainers/transfer_init.py; tools/transfer.py runs the protocol).

Everything but the loss is CoOp's (trainers/coop.py, TRAINER.COOP keys): prompt assembly,
text features, evaluation per task.
"""
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import check_choice
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method

from .coop import CoOp
from .feature_cache import accepts_features

LOSSES = ("union", "task")


def extend_cfg(cfg):
    cfg.TRAINER.MCOOP = CN()
    # union: cross-entropy over all classes of all tasks (upstream); task: over each
    # sample's own task's classes (CoOp-MT's hard masking)
    cfg.TRAINER.MCOOP.LOSS = "union"
    declare_neutral("TRAINER.MCOOP", cfg.TRAINER.MCOOP)  # a new group: runs keep their ids


@TRAINER_REGISTRY.register()
class MCoOp(CoOp):
    image_encoder = FROZEN_ENCODER

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_choice("TRAINER.MCOOP.LOSS", cfg.TRAINER.MCOOP.LOSS, LOSSES)

    @accepts_features
    def forward_train(self, image, label, task):
        if self.cfg.TRAINER.MCOOP.LOSS == "task" or len(self.tasks) == 1:
            return super().forward_train(image, label, task)  # per task (one task: the same)
        # union: every class of every task is a negative, so all are encoded
        classes = torch.arange(self.num_classes, device=self.device)
        logits = self.logit_scale * self.image_features(image) @ self.text_features(classes).t()
        return F.cross_entropy(logits.float(), label), logits, label, {}

    def results_extra(self):
        return {"variant": self.cfg.TRAINER.MCOOP.LOSS}


@register_method
class MCoOpMethod(Method):
    name = "mcoop"
    trainer = "MCoOp"
    label = "MCoOp"
    colour = "blue"  # CoOp's family (a shared CoOp prompt, as CoOp-MT)
    family = "CoOp"
    order = 55
    variants = LOSSES
    default_variant = "union"
    variant_labels = {"task": "MCoOp (per-task loss)"}
    multi_task = True

    def setting(self, ctx, variant):
        # upstream: ViT-B/16, 200 epochs (vit_b16.yaml "for all settings"); tiny: 10
        return Setting(self.trainer, self.schedule(ctx, "ep200"), variant,
                       ["TRAINER.MCOOP.LOSS", variant])
