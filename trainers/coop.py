"""CoOp (Zhou et al., IJCV 2022): a learnable context shared by all classes
(or one per class with CSC) in front of, around or after the class name."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
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
