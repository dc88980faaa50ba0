"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus an image-conditioned
shift from a small meta network (vis_dim -> vis_dim/16 -> ctx_dim)."""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.metrics.per_task import own_task_scores

from .base import ClipTrainer
from .clip_model import PromptAssembler, TextEncoder, context_init, embed_dim, text_tower
from .feature_cache import accepts_features


def extend_cfg(cfg):
    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)


class ConditionalPromptLearner(nn.Module):
    def __init__(self, cfg_cocoop, classnames, clip_model):
        super().__init__()
        ctx, prefix = context_init(clip_model, cfg_cocoop.N_CTX, cfg_cocoop.CTX_INIT)
        n_ctx, ctx_dim = ctx.shape
        vis_dim = embed_dim(clip_model)
        print(f'Initial context: "{prefix}" (tokens: {n_ctx})')
        device = text_tower(clip_model).device
        self.ctx = nn.Parameter(ctx.to(device))
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, ctx_dim)),
        ])).to(device)
        self.assembler = PromptAssembler(clip_model, classnames, n_ctx, "end", prefix)

    def forward(self, image_features):
        """Context per image: (batch, n_ctx, ctx_dim)."""
        bias = self.meta_net(image_features)
        return self.ctx.unsqueeze(0) + bias.unsqueeze(1)


@TRAINER_REGISTRY.register()
class CoCoOp(ClipTrainer):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "COCOOP"

    def build_model(self):
        clip_model = self.clip_model = self.load_clip()
        print("Building custom CLIP")
        self.prompt_learner = ConditionalPromptLearner(
            self.cfg.TRAINER.COCOOP, self.dm.dataset.classnames, clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner
        self.register_trainable("prompt_learner", self.prompt_learner)

    def conditional_logits(self, image_features, task):
        """Logits (batch, num_classes); each image's prompts are encoded only
        for its own task's classes (the others stay -inf, never needed)."""
        ctx = self.prompt_learner(image_features)
        assembler = self.prompt_learner.assembler

        def score(i, index):
            prompts = assembler(ctx[i], index)
            text = F.normalize(self.text_encoder(prompts, assembler.tokens(index)).float(), dim=-1)
            return self.logit_scale * image_features[i] @ text.t()

        return own_task_scores(score, task, self.tasks, self.num_classes, image_features)

    @accepts_features
    def forward_train(self, image, label, task):
        logits = self.conditional_logits(self.image_features(image), task)
        loss = F.cross_entropy(logits, label)
        return loss, logits, label, {}

    @accepts_features
    @torch.no_grad()
    def model_inference(self, image):
        # Instance-conditional: text features depend on the image (its features,
        # cached or encoded, feed the meta network); nothing text-side to reuse.
        task = self.current_task
        if task is None:
            task = torch.zeros(image.size(0), dtype=torch.long, device=self.device)
        with self.autocast():
            return self.conditional_logits(self.image_features(image), task.to(self.device))


@register_method
class CoCoOpMethod(Method):
    name, trainer, label, colour, order = "cocoop", "CoCoOp", "CoCoOp", "sky blue", 60
    variants, default_variant = ("nctx4_ctxv1",), "nctx4_ctxv1"
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = ("c4_ep10_batch1_ctxv1", "c4_ep10_batch1_ctxv1")

    def setting(self, ctx, variant):
        return Setting(self.trainer, f"{ctx.backbone}_c4_ep10_batch1_ctxv1", variant)
