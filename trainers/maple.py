"""MaPLe (multi-modal prompt learning; Khattak et al., CVPR 2023): deep text
prompts, and vision prompts that are a linear map of them, one map per layer.

The learnable parameters live on the text side: the layer-0 context (upstream's
layout, trainers/vl_prompts.py TextContext), J-1 deep text prompts N(0, 0.02), and
J coupling maps Linear(text width -> vision width): ``proj`` for layer 0 and J-1
deep maps that start as copies of one Linear (upstream deep-copies one module).
Vision prompts of layer i = map_i(text prompts of layer i). Widths come from the
backbone (upstream hard-codes 512 -> 768). Loss: cross-entropy.
"""
import copy

import torch.nn as nn
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError
from toolbox.methods import ImageEncoder, Method, Setting, register_method

from .ivlp import refuse_resnets
from .vl_prompts import TextContext, VLPromptTrainer, normal_prompts


def extend_cfg(cfg):
    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # prompt tokens per layer (text and vision alike)
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # J: prompts in blocks 0..J-1 of both towers
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # "template": the dataset template's words
    cfg.TRAINER.MAPLE.PREC = "fp16"  # fp16 | amp (AMP + GradScaler) | bf16 | fp32 (CPU: fp32)
    cfg.TRAINER.MAPLE.GRAD_CHECKPOINT = False  # recompute the image tower's activations
    declare_neutral("TRAINER.MAPLE", cfg.TRAINER.MAPLE)  # a new group: runs keep their ids


class MaPLePromptLearner(nn.Module):
    def __init__(self, node, classnames, clip_model, vision_width, ctx_init=None):
        super().__init__()
        ctx_init = node.CTX_INIT if ctx_init is None else ctx_init
        self.text_ctx = TextContext(clip_model, classnames, node.N_CTX, ctx_init, "MaPLe")
        text_width = self.text_ctx.ctx.shape[-1]
        depth = node.PROMPT_DEPTH
        self.proj = nn.Linear(text_width, vision_width)
        self.compound_prompts_text = normal_prompts(depth - 1, node.N_CTX, text_width)
        one = nn.Linear(text_width, vision_width)
        self.compound_projections = nn.ModuleList([copy.deepcopy(one) for _ in range(depth - 1)])
        self.n_ctx_text = node.N_CTX

    def text_embeddings(self, index=None):
        return self.text_ctx(index)

    def tokens(self, index=None):
        return self.text_ctx.tokens(index)

    def layer_prompts(self):
        """Text prompts per layer and their coupled vision prompts (one map per layer)."""
        deep = list(self.compound_prompts_text)
        vision = [self.proj(self.text_ctx.ctx)]
        vision += [f(p) for f, p in zip(self.compound_projections, deep)]
        return {"text": [None] + deep, "vision": vision}


@TRAINER_REGISTRY.register()
class MaPLe(VLPromptTrainer):
    prec_key = "MAPLE"
    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.MAPLE
        if node.PROMPT_DEPTH < 1 or node.N_CTX < 1:
            raise UserError(f"TRAINER.MAPLE.PROMPT_DEPTH and N_CTX must be >= 1 (MaPLe couples "
                            f"prompts from layer 0 on), got {node.PROMPT_DEPTH} and {node.N_CTX}")

    def make_prompt_learner(self, clip_model, classnames):
        depth = self.node.PROMPT_DEPTH
        self.check_depths(depth, depth)
        return MaPLePromptLearner(self.node, classnames, clip_model, self.vision.width,
                                  self.ctx_init())


@register_method
class MaPLeMethod(Method):
    name = "maple"
    trainer = "MaPLe"
    label = "MaPLe"
    colour = "yellow"
    family = "VLPrompts"
    order = 66
    variants = ("j9", "j3")  # the prompt depth J (also the folder name)
    default_variant = "j9"
    variant_labels = {"j9": "MaPLe", "j3": "MaPLe (J=3)"}
    protocols = ("fewshot", "base2new", "xd", "dg")
    # upstream trains the cross-dataset / DG source model with its J=3 recipe
    protocol_schedule = {"default": ("ep5_batch4_2ctx", "ep10"),
                         "xd": ("ep2_batch4_2ctx_xd", "ep10"), "dg": ("ep2_batch4_2ctx_xd", "ep10")}
    script_args = ("VARIANT",)
    script_usage = ("VARIANT: j9 (J=9, lr 0.0035, 5 epochs; default) or j3 (the cross-dataset/DG "
                    "recipe: J=3, lr 0.0026, 2 epochs); both 2 tokens, batch 4")

    def setting(self, ctx, variant):
        refuse_resnets("MaPLe", ctx)
        if ctx.protocol in ("xd", "dg") and variant == self.default_variant:
            variant = "j3"  # upstream trains the cross-dataset source model with J=3
        sched = {"j9": "ep5_batch4_2ctx", "j3": "ep2_batch4_2ctx_xd"}[variant]
        # the tiny backbones have 2 layers: one tiny config (J=2) serves both
        return Setting(self.trainer, self.schedule(ctx, sched, "ep10"), variant)
