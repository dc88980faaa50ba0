"""CoOp (Zhou et al., IJCV 2022): a learnable context shared by all classes
(or one per class with CSC) in front of, around or after the class name."""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError
from toolbox.methods import FROZEN_ENCODER, Method, Setting, recipe_value, register_method
from toolbox.engine import distributed as ddp

from .base import ClipTrainer
from .feature_cache import accepts_features
from .clip_model import PromptAssembler, TextEncoder, context_init, text_tower


def extend_cfg(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation words, e.g. "a photo of a"
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end | middle | front


class PromptLearner(nn.Module):
    def __init__(self, cfg_coop, classnames, clip_model):
        super().__init__()
        n_cls = len(classnames)
        ctx, prefix = context_init(clip_model, cfg_coop.N_CTX, cfg_coop.CTX_INIT,
                                   n_copies=n_cls if cfg_coop.CSC else None)
        n_ctx = ctx.shape[-2]
        print(f'Initial context: "{prefix}" (tokens: {n_ctx}, class-specific: {cfg_coop.CSC})')
        self.ctx = nn.Parameter(ctx.to(text_tower(clip_model).device))
        self.assembler = PromptAssembler(clip_model, classnames, n_ctx,
                                         cfg_coop.CLASS_TOKEN_POSITION, prefix)
        self.n_cls, self.n_ctx = n_cls, n_ctx

    def forward(self, index=None):
        ctx = self.ctx if (self.ctx.dim() == 2 or index is None) else self.ctx[index]
        return self.assembler(ctx, index)

    def tokens(self, index=None):
        return self.assembler.tokens(index)


@TRAINER_REGISTRY.register()
class CoOp(ClipTrainer):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "COOP"

    def build_model(self):
        clip_model = self.clip_model = self.load_clip()
        print("Building custom CLIP")
        self.prompt_learner = PromptLearner(self.cfg.TRAINER.COOP, self.dm.dataset.classnames,
                                            clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner  # the trainable part
        self.register_trainable("prompt_learner", self.prompt_learner)

    def encode_classes(self, index=None):
        """Normalised text features of the classes ``index`` (all when None)."""
        prompts = self.prompt_learner(index)
        return F.normalize(self.text_encoder(prompts, self.prompt_learner.tokens(index)).float(),
                           dim=-1)

    def text_features(self, index=None):
        """``encode_classes``; under DDP each rank encodes its share of the classes
        (ClipTrainer.split_over_ranks)."""
        if index is None:
            if not ddp.is_distributed():
                return self.encode_classes()
            index = torch.arange(self.num_classes, device=self.device)
            return self.split_over_ranks(self.encode_classes, index, same_on_all_ranks=True)
        return self.split_over_ranks(self.encode_classes, index)

    @accepts_features
    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        logits = self.logit_scale * self.image_features(image) @ self.text_features(classes).t()
        loss, logits, target = self.task_loss(logits, label, task, classes)
        return loss, logits, target, {}

    def class_text_features(self):
        return self.text_features()


@register_method
class CoOpMethod(Method):
    """Variants: ``default`` (the recipe's context), or N_CTX[-CSC[-POSITION]] (e.g.
    16-False-end; N_CTX 'default': the recipe's), or the folder name
    nctx<N>_csc<CSC>_ctp<POSITION> itself."""
    name, trainer, label, colour, order = "coop", "CoOp", "CoOp", "blue", 40
    quick = True  # in the benches' default demo grids
    default_variant = "default"
    variant_help = ("default (the config's context), or N_CTX[-CSC[-CLASS_TOKEN_POSITION]] (e.g. "
                    "16-False-end; N_CTX 'default': the config's) or nctx16_cscFalse_ctpend")
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = ("ep50", "ep10")
    script_args = ("N_CTX", "CSC", "CLASS_TOKEN_POSITION")
    script_usage = ("[N_CTX] [CSC] [CLASS_TOKEN_POSITION]: e.g. 16 False end (a given N_CTX "
                    "replaces the config's CTX_INIT words by a random init)")
    FOLDER = re.compile(r"nctx(\d+)_csc(True|False)_ctp(end|middle|front)")

    def parse_variant(self, variant):
        """-> (n_ctx or None for the recipe's, csc, position)."""
        if variant in ("", None, "default"):
            return None, "False", "end"
        m = self.FOLDER.fullmatch(variant)
        parts = list(m.groups()) if m else variant.split("-")
        bad = UserError(f"unknown variant '{variant}' of method coop; use {self.variant_help}")
        if not (1 <= len(parts) <= 3) or not (parts[0].isdigit() or parts[0] == "default"):
            raise bad
        nctx, csc, ctp = (parts + ["False", "end"][len(parts) - 1:])[:3]
        if csc not in ("True", "False") or ctp not in ("end", "middle", "front"):
            raise bad
        return (None if nctx == "default" else nctx), csc, ctp

    def variant_from_args(self, args):
        nctx, csc, ctp = (list(args) + [None, None, None])[:3]
        if len(args) > 3:
            raise UserError(f"coop takes at most {' '.join(self.script_args)} after BACKBONE")
        if nctx:
            return f"{nctx}-{csc or 'False'}-{ctp or 'end'}"
        if csc or ctp:
            return f"default-{csc or 'False'}-{ctp or 'end'}"
        return "default"

    def setting(self, ctx, variant):
        nctx, csc, ctp = self.parse_variant(variant)
        # CoOp's shot-dependent schedule on single datasets, 50 epochs on suites
        # (SoftCPT's paper), 10 on the tiny backbones
        if ctx.tiny:
            config = f"{ctx.backbone}_ep10"
        elif ctx.suite or ctx.shots <= 2:
            config = f"{ctx.backbone}_ep50"
        elif ctx.shots <= 8:
            config = f"{ctx.backbone}_ep100"
        else:
            config = f"{ctx.backbone}_ep200"
        # A recipe's CTX_INIT (else the dataset config's, the demo's digit words) fixes
        # the context, unless N_CTX is given, which then wins with a random init; the
        # variant folder says which it was.
        ctx_init = recipe_value(self.trainer, config, "TRAINER.COOP.CTX_INIT")
        if ctx_init is None:  # the trainer config wins where it sets one (merged last)
            ctx_init = ctx.dataset_value("TRAINER.COOP.CTX_INIT", "")
        if nctx is not None or not ctx_init:
            nctx = nctx or "16"
            opts = ["TRAINER.COOP.N_CTX", nctx, "TRAINER.COOP.CTX_INIT", ""]
        else:
            nctx, opts = str(len(str(ctx_init).split())), []
        opts += ["TRAINER.COOP.CSC", csc, "TRAINER.COOP.CLASS_TOKEN_POSITION", ctp]
        return Setting(self.trainer, config, f"nctx{nctx}_csc{csc}_ctp{ctp}", opts)

    def table_label(self, variant, config=""):
        return self.label if self.FOLDER.fullmatch(variant) else f"{self.label} ({variant})"

    def label_detail(self, variant):
        """'nctx16_cscTrue_ctpfront' -> '16 ctx, CSC, front'."""
        m = self.FOLDER.fullmatch(variant)
        if not m:
            return variant
        nctx, csc, ctp = m.groups()
        return ", ".join([f"{nctx} ctx"] + ["CSC"] * (csc == "True") + [ctp] * (ctp != "end"))
