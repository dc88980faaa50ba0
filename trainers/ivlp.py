"""IVLP (independent vision-language prompting; Khattak et al., MaPLe, CVPR 2023):
deep prompts in both towers of a CLIP ViT, learnt independently (no coupling).

Text: the layer-0 context in upstream's layout (trainers/vl_prompts.py TextContext),
then N(0, 0.02) prompts replacing the tokens after SOS before blocks 1..J_t-1.
Vision: N(0, 0.02) prompts appended after CLS + patches at the input (before
ln_pre) and replaced before blocks 1..J_v-1. Loss: cross-entropy.
"""
import torch.nn as nn
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import ImageEncoder, Method, Setting, register_method

from .prompted_towers import check_deep_prompt_backbone
from .vl_prompts import TextContext, VLPromptTrainer, add_vl_keys, normal_prompts


def extend_cfg(cfg):
    cfg.TRAINER.IVLP = CN()
    add_vl_keys(cfg.TRAINER.IVLP, n_ctx=2, depth=9)  # MP train.py defaults
    declare_neutral("TRAINER.IVLP", cfg.TRAINER.IVLP)  # a new group: runs keep their ids


class IVLPPromptLearner(nn.Module):
    def __init__(self, node, classnames, clip_model, vision_width, method="IVLP", ctx_init=None):
        super().__init__()
        n_t = node.N_CTX_TEXT if node.PROMPT_DEPTH_TEXT > 0 else 0
        n_v = node.N_CTX_VISION if node.PROMPT_DEPTH_VISION > 0 else 0
        ctx_init = node.CTX_INIT if ctx_init is None else ctx_init
        self.text_ctx = TextContext(clip_model, classnames, n_t, ctx_init, method)
        width = self.text_ctx.ctx.shape[-1]
        deep_text = max(node.PROMPT_DEPTH_TEXT - 1, 0) if n_t else 0
        self.text_deep = normal_prompts(deep_text, n_t, width)
        self.vision = normal_prompts(node.PROMPT_DEPTH_VISION if n_v else 0, n_v, vision_width)
        self.n_ctx_text = n_t

    def text_embeddings(self, index=None):
        return self.text_ctx(index)

    def tokens(self, index=None):
        return self.text_ctx.tokens(index)

    def layer_prompts(self):
        """{"text": [None, deep_1, ...], "vision": [input, deep_1, ...]} (see prompted_towers)."""
        text = [None] + list(self.text_deep) if self.n_ctx_text else []
        return {"text": text, "vision": list(self.vision)}


@TRAINER_REGISTRY.register()
class IVLP(VLPromptTrainer):
    prec_key = "IVLP"
    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)

    def make_prompt_learner(self, clip_model, classnames):
        node = self.node
        self.check_depths(node.PROMPT_DEPTH_TEXT, node.PROMPT_DEPTH_VISION)
        return IVLPPromptLearner(node, classnames, clip_model, self.vision.width,
                                 self.cfg.TRAINER.NAME, self.ctx_init())


def refuse_resnets(method, ctx):
    """Scripts and the grid refuse a backbone without a prompt-able image tower early."""
    check_deep_prompt_backbone(method, ctx.backbone)


@register_method
class IVLPMethod(Method):
    name = "ivlp"
    trainer = "IVLP"
    label = "IVLP"
    colour = "yellow"
    family = "VLPrompts"
    order = 65
    variants = ("ctx4_4", "ctx2_2")  # text + vision prompt tokens (also the folder name)
    default_variant = "ctx4_4"
    variant_labels = {"ctx4_4": "IVLP", "ctx2_2": "IVLP (2+2)"}
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = ("ep20_batch4_4ctx", "ep10")  # the 4+4 recipe in every protocol
    script_args = ("VARIANT",)
    script_usage = ("VARIANT: ctx4_4 (PromptSRC's IVLP: depth 9, 4+4 tokens, lr 0.0025, 20 "
                    "epochs; default) or ctx2_2 (MaPLe repo's IVLP: depth 12, 2+2 tokens, lr "
                    "0.0035, 5 epochs)")

    def setting(self, ctx, variant):
        refuse_resnets("IVLP", ctx)
        sched = {"ctx4_4": "ep20_batch4_4ctx", "ctx2_2": "ep5_batch4_2ctx"}[variant]
        n = variant[3]
        # the tiny config serves both variants: the token counts come as options
        opts = [] if not ctx.tiny else ["TRAINER.IVLP.N_CTX_TEXT", n, "TRAINER.IVLP.N_CTX_VISION", n]
        return Setting(self.trainer, self.schedule(ctx, sched, "ep10"), variant, opts)
