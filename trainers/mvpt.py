"""MVLPT's vision-side prompts (Shen et al., WACV 2024; sIncerass/MVLPT trainers/mvlpt.py):

- MVPT: deep visual prompts (VPT-deep) in a CLIP ViT, inserted right after CLS and after
  ln_pre, [CLS, P, patches]; deep layers replace those tokens before blocks 1..L-1. The
  text side is CLIP's frozen hand-written prompt "a photo of a <class>." (upstream's
  prompt_prefix when no CoOp context is learnt).
- MUPT: MVPT's visual prompts plus a CoOp context (class token in the middle), both mapped
  to PROJECT_DIM by linear layers, passed through one CLIP transformer block (width
  PROJECT_DIM, 1 head) and mapped back. As upstream writes it, the (1, T, PROJECT_DIM)
  tensor enters a sequence-first block, so the sequence length is 1: no attention across
  prompt tokens, each token gets value/out projection and the MLP with residuals.

Both train on the union of the source tasks' classes (MCoOp's loss, TRAINER.<X>.LOSS) and
initialise targets through MODEL.INIT_FROM (trainers/transfer_init.py). ViT only.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError, check_choice
from toolbox.methods import ImageEncoder, Method, Setting, register_method

from .clip_model import PromptAssembler, context_init, text_tower
from .ivlp import refuse_resnets
from .mcoop import LOSSES
from .vl_prompts import VLPromptTrainer

PROJECT_METHODS = ("transformer", "identity")


def _common_keys(node, n_vision):
    node.N_CTX_VISION = n_vision  # visual prompt tokens after CLS (per layer)
    node.DEEP = True  # VPT-deep: fresh prompts before every block (upstream's default)
    node.LOSS = "union"  # union of all tasks' classes (upstream) | task (own task's classes)
    node.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)
    node.GRAD_CHECKPOINT = False  # recompute the image tower's activations in backward


def extend_cfg(cfg):
    cfg.TRAINER.MVPT = CN()
    _common_keys(cfg.TRAINER.MVPT, 16)  # MVLPT.md: M = 16 for MVPT
    # the frozen text prompt's words; "template": the dataset's first template's words
    cfg.TRAINER.MVPT.CTX_INIT = "a photo of a"
    declare_neutral("TRAINER.MVPT", cfg.TRAINER.MVPT)  # a new group: runs keep their ids
    cfg.TRAINER.MUPT = CN()
    _common_keys(cfg.TRAINER.MUPT, 4)  # MVLPT.md: M = 4 for MUPT
    cfg.TRAINER.MUPT.N_CTX_TEXT = 4
    cfg.TRAINER.MUPT.CLASS_TOKEN_POSITION = "middle"  # every upstream script
    cfg.TRAINER.MUPT.PROJECT_DIM = 128  # upstream train.py
    cfg.TRAINER.MUPT.PROJECT_METHOD = "transformer"  # transformer (upstream) | identity
    declare_neutral("TRAINER.MUPT", cfg.TRAINER.MUPT)


def vpt_prompts(visual, n, count, width):
    """``count`` (n, width) prompts, uniform in +-sqrt(6 / (3 p^2 + width)) as upstream
    (VPT's Xavier bound for a p x p patch)."""
    k = visual.conv1.kernel_size
    bound = math.sqrt(6.0 / float(3 * k[0] * k[1] + width))
    return nn.Parameter(torch.empty(count, n, width).uniform_(-bound, bound))


class MVPTPromptLearner(nn.Module):
    """Visual prompts (input + deep) and a fixed text prompt."""

    def __init__(self, node, classnames, clip_model, vision, method, ctx_init, n_text=0,
                 position="end"):
        super().__init__()
        count = vision.layers if node.DEEP else 1
        self.vpt = vpt_prompts(vision.visual, node.N_CTX_VISION, count, vision.width)
        if n_text:
            ctx, prefix = context_init(clip_model, n_text)  # N(0, 0.02), "X X .."
            self.ctx = nn.Parameter(ctx.to(text_tower(clip_model).device))
        else:
            self.ctx, prefix = None, (ctx_init or "").replace("_", " ").strip()
            print(f'{method}: fixed text prompt "{prefix} <class>."')
        self.assembler = PromptAssembler(clip_model, classnames, n_text, position, prefix)
        self.n_ctx_text = 0  # no deep text prompts: the text context is layer 0 only

    def text_embeddings(self, index=None, ctx=None):
        if ctx is None:
            ctx = self.ctx
        if ctx is None:
            ctx = self.assembler.token_prefix.new_zeros(0, self.assembler.token_prefix.shape[-1])
        return self.assembler(ctx, index)

    def tokens(self, index=None):
        return self.assembler.tokens(index)

    def layer_prompts(self):
        return {"text": [], "vision": list(self.vpt.unbind(0))}


class MUPTPromptLearner(MVPTPromptLearner):
    """MVPT's prompts plus a CoOp context, coupled by a shared projection."""

    def __init__(self, node, classnames, clip_model, vision, method):
        super().__init__(node, classnames, clip_model, vision, method, "", node.N_CTX_TEXT,
                         node.CLASS_TOKEN_POSITION)
        text_width, dim = self.ctx.shape[-1], node.PROJECT_DIM
        self.method = node.PROJECT_METHOD
        if self.method == "transformer":
            from clip.model import Transformer

            # as upstream: a linear map only where the width differs from PROJECT_DIM
            def pair(width):
                if width == dim:
                    return nn.Identity(), nn.Identity()
                return nn.Linear(width, dim), nn.Linear(dim, width)

            self.text_pre, self.text_post = pair(text_width)
            self.vision_pre, self.vision_post = pair(vision.width)
            self.joint = Transformer(width=dim, layers=1, heads=1)

    def coupled(self):
        """(text context (n_t, D_t), vision prompts (layers, n_v, D_v)) after the joint map."""
        if self.method == "identity":
            return self.ctx, self.vpt
        n_t, (layers, n_v, width) = self.ctx.shape[0], self.vpt.shape
        text = self.text_pre(self.ctx).unsqueeze(0)  # (1, n_t, dim)
        vis = self.vision_pre(self.vpt.reshape(1, layers * n_v, width))
        # (1, T, dim) into a sequence-first block: length 1, batch T (upstream's shape), so
        # every token is mapped on its own; no attention across tokens
        joint = self.joint(torch.cat([text, vis], dim=1).float())
        text = self.text_post(joint[:, :n_t]).reshape(n_t, -1)
        vis = self.vision_post(joint[:, n_t:]).reshape(layers, n_v, width)
        return text, vis

    def text_embeddings(self, index=None, ctx=None):
        return super().text_embeddings(index, self.coupled()[0] if ctx is None else ctx)

    def layer_prompts(self):
        text, vis = self.coupled()
        return {"text": [], "vision": list(vis.unbind(0)), "text_ctx": text}


class _MVLPTVision(VLPromptTrainer):
    """MVPT/MUPT: VLPromptTrainer with MVLPT's placement and MCoOp's union loss."""

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_choice(f"TRAINER.{self.prec_key}.LOSS", cfg.TRAINER[self.prec_key].LOSS, LOSSES)

    def encode_image_prompted(self, image, prompts):
        feats = self.vision(image, prompts["vision"], position="after_cls", stage="after_ln_pre",
                            use_checkpoint=self.node.GRAD_CHECKPOINT and self.model.training)
        return F.normalize(feats.float(), dim=-1)

    def encode_text_prompted(self, prompts, index=None):
        pl = self.prompt_learner
        emb = pl.text_embeddings(index, prompts.get("text_ctx"))
        return F.normalize(self.text_encoder(emb, pl.tokens(index)).float(), dim=-1)

    def forward_train(self, image, label, task):
        if self.node.LOSS == "task" or len(self.tasks) == 1:
            return super().forward_train(image, label, task)
        # union (upstream): every class of every source task is a negative
        classes = torch.arange(self.num_classes, device=self.device)
        logits = self.prompted_logits(image, classes)[0]
        return F.cross_entropy(logits.float(), label), logits, label, {}

    def results_extra(self):
        return {"variant": self.node.LOSS}


@TRAINER_REGISTRY.register()
class MVPT(_MVLPTVision):
    prec_key = "MVPT"
    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)  # prompted

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.MVPT.N_CTX_VISION < 1:
            raise UserError("TRAINER.MVPT.N_CTX_VISION must be >= 1 (MVPT learns only visual "
                            f"prompts), got {cfg.TRAINER.MVPT.N_CTX_VISION}")

    def make_prompt_learner(self, clip_model, classnames):
        return MVPTPromptLearner(self.node, classnames, clip_model, self.vision,
                                 self.cfg.TRAINER.NAME, self.ctx_init())


@TRAINER_REGISTRY.register()
class MUPT(_MVLPTVision):
    prec_key = "MUPT"
    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)  # prompted

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.MUPT
        check_choice("TRAINER.MUPT.PROJECT_METHOD", node.PROJECT_METHOD, PROJECT_METHODS)
        for key in ("N_CTX_VISION", "N_CTX_TEXT", "PROJECT_DIM"):
            if node[key] < 1:
                raise UserError(f"TRAINER.MUPT.{key} must be >= 1 (MUPT couples a text and a "
                                f"visual prompt), got {node[key]}")

    def make_prompt_learner(self, clip_model, classnames):
        return MUPTPromptLearner(self.node, classnames, clip_model, self.vision,
                                 self.cfg.TRAINER.NAME)


class _MVLPTMethod(Method):
    family = "VLPrompts"  # prompts in the image tower, as IVLP/MaPLe
    variants = LOSSES
    default_variant = "union"
    multi_task = True
    in_comparison = False  # source-to-target methods (tools/transfer.py)

    def setting(self, ctx, variant):
        refuse_resnets(self.label, ctx)
        # upstream: vit_b16.yaml "for all settings" (200 epochs); tiny: 10
        return Setting(self.trainer, self.schedule(ctx, "ep200"), variant,
                       [f"TRAINER.{self.trainer.upper()}.LOSS", variant])


@register_method
class MVPTMethod(_MVLPTMethod):
    name = "mvpt"
    trainer = "MVPT"
    label = "MVPT"
    colour = "yellow"
    order = 56
    variant_labels = {"task": "MVPT (per-task loss)"}


@register_method
class MUPTMethod(_MVLPTMethod):
    name = "mupt"
    trainer = "MUPT"
    label = "MUPT"
    colour = "yellow"
    order = 57
    variant_labels = {"task": "MUPT (per-task loss)"}
