"""CoOp trained jointly on a suite with hard context sharing, SoftCPT's
baselines:

- ``shared`` (CoOp-MT): one context for every class of every task;
- ``task`` (CoOp-CA): one context per task, shared by the task's classes;
- ``class`` (CoOp-CS): one context per class.

Everything but the context layout is CoOp's (trainers/coop.py): prompt
assembly, text features, the per-task loss over the batch's tasks.
"""
import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.errors import check_choice

from .clip_model import TextEncoder
from .coop import CoOp, PromptLearner

MODES = ("shared", "task", "class")


def extend_cfg(cfg):
    cfg.TRAINER.COOP_MT = CN()
    cfg.TRAINER.COOP_MT.MODE = "task"  # shared (CoOp-MT) | task (CoOp-CA) | class (CoOp-CS)
    cfg.TRAINER.COOP_MT.N_CTX = 16
    cfg.TRAINER.COOP_MT.CTX_INIT = ""
    cfg.TRAINER.COOP_MT.CLASS_TOKEN_POSITION = "end"  # end | middle | front
    cfg.TRAINER.COOP_MT.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)


class MultiTaskPromptLearner(PromptLearner):
    """CoOp's prompt learner with the context shared by all classes, per
    task, or per class (``ctx`` shape (n_ctx, d), (n_tasks, n_ctx, d) or
    (n_classes, n_ctx, d))."""

    def __init__(self, cfg_mt, tasks, clip_model):
        cfg_coop = cfg_mt.clone()
        cfg_coop.defrost()
        cfg_coop.CSC = cfg_mt.MODE == "class"
        classnames = [c for t in tasks for c in t.classnames]
        super().__init__(cfg_coop, classnames, clip_model)
        self.mode = cfg_mt.MODE
        owner = [i for i, t in enumerate(tasks) for _ in t.classnames]
        self.register_buffer("owner", torch.tensor(owner, device=self.ctx.device),
                             persistent=False)
        if self.mode == "task":  # every task starts from the same initial context
            self.ctx = nn.Parameter(self.ctx.data.unsqueeze(0).repeat(len(tasks), 1, 1))

    def forward(self, index=None):
        if self.mode != "task":
            return super().forward(index)
        index_ = index if index is not None else torch.arange(self.n_cls, device=self.ctx.device)
        return self.assembler(self.ctx[self.owner[index_]], index)


@TRAINER_REGISTRY.register()
class CoOpMT(CoOp):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "COOP_MT"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_choice("TRAINER.COOP_MT.MODE", cfg.TRAINER.COOP_MT.MODE, MODES)

    def build_model(self):
        clip_model = self.clip_model = self.load_clip()
        mode = self.cfg.TRAINER.COOP_MT.MODE
        print(f"Building CoOp on {len(self.tasks)} task(s) (context: {mode})")
        self.prompt_learner = MultiTaskPromptLearner(self.cfg.TRAINER.COOP_MT, self.tasks,
                                                     clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner
        self.register_trainable("prompt_learner", self.prompt_learner)

    def results_extra(self):
        return {"variant": self.cfg.TRAINER.COOP_MT.MODE}


@register_method
class CoOpMTMethod(Method):
    name, trainer, label, colour, order = "coop_mt", "CoOpMT", "CoOp-MT", "blue", 50
    family = "CoOp"  # CoOp's colour; its own marker per variant
    variants, default_variant = MODES, "task"
    variant_labels = {"shared": "CoOp-MT", "task": "CoOp-CA", "class": "CoOp-CS"}
    comparison_variants = ("shared", "task", "class")
    variants_env = ("COOP_MT_MODES",)  # compare_all.sh's older name for COOP_MT_VARIANTS
    multi_task = True

    def setting(self, ctx, variant):
        return Setting(self.trainer, self.schedule(ctx, "ep50"), variant,
                       ["TRAINER.COOP_MT.MODE", variant])
