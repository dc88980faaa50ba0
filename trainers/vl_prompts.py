"""What IVLP, MaPLe and PromptSRC share: prompts in both towers of a CLIP ViT.

A prompt learner here returns, once per step, the text prompt embeddings of the
classes asked for (layer-0 context in upstream's layout), the deep text prompts and
the vision prompts per layer (trainers/prompted_towers.py). The trainer runs both
towers with them; the image encoder is prompted, so it is declared not frozen and
neither training nor evaluation ever reads the frozen-feature cache.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.errors import UserError
from toolbox.methods import ImageEncoder

from .base import ClipTrainer
from .clip_model import PromptAssembler, text_tower
from .prompted_towers import DeepTextEncoder, VisionTower, check_deep_prompt_backbone, check_depth

# Upstream (MaPLe/PromptSRC prompt learners) uses the words of CTX_INIT only up to
# this many context tokens; longer contexts start random.
WORD_INIT_MAX_CTX = 4


def add_vl_keys(node, n_ctx, depth, ctx_init="a photo of a"):
    """The config keys every method here has (values: upstream's train.py defaults)."""
    node.N_CTX_TEXT = n_ctx  # learnable tokens after SOS (layer 0 and each deep layer)
    node.N_CTX_VISION = n_ctx  # prompt tokens appended after CLS + patches
    node.PROMPT_DEPTH_TEXT = depth  # J: text prompts in blocks 0..J-1, carried forward after
    node.PROMPT_DEPTH_VISION = depth  # J: vision prompts in blocks 0..J-1
    # the layer-0 text context starts as its first N_CTX_TEXT words; "template": the words of
    # the dataset's first template before "{}" (the tiny demo recipes)
    node.CTX_INIT = ctx_init
    node.PREC = "fp16"  # fp16 | amp (AMP + GradScaler) | bf16 | fp32 (fp32 always on CPU)
    node.GRAD_CHECKPOINT = False  # recompute the image tower's activations in backward


def normal_prompts(count, n, width, std=0.02):
    """``count`` (n, width) prompt tensors drawn from N(0, std)."""
    return nn.ParameterList([nn.Parameter(torch.empty(n, width).normal_(0, std))
                             for _ in range(count)])


class TextContext(nn.Module):
    """The layer-0 text context in upstream's layout: with CTX_INIT and at most
    WORD_INIT_MAX_CTX tokens, the vectors start as the first N_CTX words of CTX_INIT
    and the prompt is "<CTX_INIT> <class>." (so with 2 tokens of "a photo of a", the
    words "of a" stay as fixed text after the learned tokens); otherwise N(0, 0.02)
    and "X .. X <class>.". With 0 tokens the prompt is "<class>." and nothing is learnt.
    """

    def __init__(self, clip_model, classnames, n_ctx, ctx_init, method):
        super().__init__()
        tower = text_tower(clip_model)
        ctx_init = (ctx_init or "").replace("_", " ").strip()
        if n_ctx and ctx_init and n_ctx <= WORD_INIT_MAX_CTX:
            tokens = tower.tokenize([ctx_init])
            words = int(tokens.argmax(-1).item()) - 1
            if n_ctx > words:
                raise UserError(f"{method}: N_CTX_TEXT {n_ctx} is more than the {words} tokens of "
                                f"CTX_INIT '{ctx_init}'; use a longer CTX_INIT, fewer tokens, "
                                "or CTX_INIT '' (random start)")
            with torch.no_grad():
                vectors = tower.embed(tokens)[0, 1:1 + n_ctx].float().cpu().clone()
            prefix = ctx_init
        else:
            vectors = torch.empty(n_ctx, tower.width).normal_(0, 0.02)
            prefix = " ".join(["X"] * n_ctx)
        print(f'{method}: initial text context "{prefix}" ({n_ctx} learnable tokens)')
        self.ctx = nn.Parameter(vectors.to(tower.device))
        self.n_ctx = n_ctx
        self.assembler = PromptAssembler(clip_model, classnames, n_ctx, "end", prefix)

    def forward(self, index=None):
        return self.assembler(self.ctx, index)

    def tokens(self, index=None):
        return self.assembler.tokens(index)


class VLPromptTrainer(ClipTrainer):
    """Base of the trainers with prompts in both towers."""

    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)
    split_text = False  # every rank encodes its own batch's classes (prompts change per step)

    @property
    def node(self):
        return self.cfg.TRAINER[self.prec_key]

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_deep_prompt_backbone(cfg.TRAINER.NAME, cfg.MODEL.BACKBONE.NAME)
        node = cfg.TRAINER[self.prec_key]
        for key in ("N_CTX_TEXT", "N_CTX_VISION", "PROMPT_DEPTH_TEXT", "PROMPT_DEPTH_VISION"):
            if key in node and node[key] < 0:
                raise UserError(f"TRAINER.{self.prec_key}.{key} must be >= 0, got {node[key]}")

    def make_prompt_learner(self, clip_model, classnames):
        raise TypeError(f"{type(self).__name__} must implement make_prompt_learner()")

    def build_model(self):
        clip_model = self.clip_model = self.load_clip()
        method, backbone = self.cfg.TRAINER.NAME, self.cfg.MODEL.BACKBONE.NAME
        self.vision = VisionTower(clip_model, method, backbone)
        self.text_encoder = DeepTextEncoder(clip_model).to(self.device)
        print(f"Building {method} (image tower: {self.vision.layers} layers of width "
              f"{self.vision.width}; text tower: {self.text_encoder.layers} of width "
              f"{self.text_encoder.width})")
        self.prompt_learner = self.make_prompt_learner(clip_model, self.dm.dataset.classnames)
        self.prompt_learner.to(self.device)
        self.model = self.prompt_learner  # the trainable part
        n = sum(p.numel() for p in self.prompt_learner.parameters() if p.requires_grad)
        if n == 0:
            raise UserError(f"{method}: no prompt to learn (all prompt lengths or depths are 0); "
                            "set N_CTX_* and PROMPT_DEPTH_* above 0")
        print(f"Learnable parameters: {n:,}")
        self.register_trainable("prompt_learner", self.prompt_learner)

    def ctx_init(self):
        """CTX_INIT's words ("template": those of the tasks' first template)."""
        words = self.node.CTX_INIT
        if words == "template":
            from .prograd import template_words

            words = template_words(self.tasks)
        return words

    def check_depths(self, text_depth, vision_depth):
        method = self.cfg.TRAINER.NAME
        check_depth(method, "text", text_depth, self.text_encoder.layers)
        check_depth(method, "image", vision_depth, self.vision.layers)

    # ---- the two towers with this step's prompts -----------------------------------

    def encode_text_prompted(self, prompts, index=None):
        """Normalised prompted text features of the classes ``index`` (all when None);
        ``prompts``: this step's ``prompt_learner.layer_prompts()``."""
        pl = self.prompt_learner
        feats = self.text_encoder(pl.text_embeddings(index), pl.tokens(index), prompts["text"],
                                  n_ctx=pl.n_ctx_text)
        return F.normalize(feats.float(), dim=-1)

    def encode_image_prompted(self, image, prompts):
        feats = self.vision(image, prompts["vision"],
                            use_checkpoint=self.node.GRAD_CHECKPOINT and self.model.training)
        return F.normalize(feats.float(), dim=-1)

    def image_features(self, image):
        """The prompted image encoder (never the frozen one, never the cache)."""
        return self.encode_image_prompted(image, self.prompt_learner.layer_prompts())

    def prompted_logits(self, image, classes):
        prompts = self.prompt_learner.layer_prompts()
        text = self.encode_text_prompted(prompts, classes)
        img = self.encode_image_prompted(image, prompts)
        return self.logit_scale * img @ text.t(), img, text

    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        logits = self.prompted_logits(image, classes)[0]
        loss, logits, target = self.task_loss(logits, label, task, classes)
        return loss, logits, target, {}

    # ---- evaluation: the prompted image encoder on every image ------------------------

    def class_text_features(self):
        return self.encode_text_prompted(self.prompt_learner.layer_prompts())

    @torch.no_grad()
    def model_inference(self, image):  # not accepts_features: no cached frozen features
        with self.autocast():
            if self._eval_text is None:
                self._eval_text = self.class_text_features()
            img = self.image_features(image)
        return self.logit_scale * img @ self._eval_text.t()
