"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024): low-rank adapters on the q, k, v
projections of every attention layer of both towers, trained with AdamW and a cosine
annealed per iteration over 500 x shots iterations; one hand-crafted template per task;
the last model (no model selection).

OpenAI CLIP and OpenCLIP are both supported: their ``nn.MultiheadAttention`` modules are
replaced by LoRA versions (trainers/lora_layers.py). A tower without such layers (a
ResNet image tower) cannot be adapted: asking for it is an error, not a silent no-op.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError, check_choice
from toolbox.methods import ImageEncoder, Method, Setting, register_method

from .base import ClipTrainer
from .clip_model import TextEncoder, text_tower
from .iteration_schedule import (PerIterationSchedule, Truncated, adamw, cosine_per_iteration,
                                 epochs_for)
from .lora_layers import PROJECTIONS, add_lora
from .templates import TEMPLATE_MODES, templates_for

ENCODERS = ("both", "text", "vision")
POSITIONS = ("all", "half-up", "half-bottom")


def extend_cfg(cfg):
    cfg.TRAINER.CLIP_LORA = CN()
    cfg.TRAINER.CLIP_LORA.RANK = 2
    cfg.TRAINER.CLIP_LORA.ALPHA = 1.0
    # rslora: alpha / sqrt(rank) (upstream) | lora: alpha / rank
    cfg.TRAINER.CLIP_LORA.SCALING = "rslora"
    cfg.TRAINER.CLIP_LORA.DROPOUT = 0.25  # on the adapter branch's input only
    cfg.TRAINER.CLIP_LORA.PARAMS = ["q", "k", "v"]  # projections adapted (o: the output one)
    cfg.TRAINER.CLIP_LORA.ENCODER = "both"  # both | text | vision
    cfg.TRAINER.CLIP_LORA.POSITION = "all"  # all | half-up | half-bottom blocks
    # Training length: ITERS_PER_SHOT x DATASET.NUM_SHOTS iterations (upstream: 500);
    # 0: OPTIM.MAX_EPOCH epochs instead.
    cfg.TRAINER.CLIP_LORA.ITERS_PER_SHOT = 500
    cfg.TRAINER.CLIP_LORA.ETA_MIN = 1e-6  # the cosine's floor
    cfg.TRAINER.CLIP_LORA.TEMPLATES = "task"  # one template per task (upstream: template[0])
    cfg.TRAINER.CLIP_LORA.LOGIT_SCALE = 0.0  # 0: the model's own (100 on OpenAI CLIP, upstream's)
    cfg.TRAINER.CLIP_LORA.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)
    declare_neutral("TRAINER.CLIP_LORA", cfg.TRAINER.CLIP_LORA)  # a new group: runs keep ids


@TRAINER_REGISTRY.register()
class CLIPLoRA(PerIterationSchedule, ClipTrainer):
    prec_key = "CLIP_LORA"
    # LoRA changes both towers' features: never served from the frozen-feature cache
    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        c = cfg.TRAINER.CLIP_LORA
        check_choice("TRAINER.CLIP_LORA.ENCODER", c.ENCODER, ENCODERS)
        check_choice("TRAINER.CLIP_LORA.POSITION", c.POSITION, POSITIONS)
        check_choice("TRAINER.CLIP_LORA.SCALING", c.SCALING, ("rslora", "lora"))
        check_choice("TRAINER.CLIP_LORA.TEMPLATES", c.TEMPLATES, TEMPLATE_MODES)
        bad = [p for p in c.PARAMS if p not in PROJECTIONS]
        if bad or not c.PARAMS:
            raise UserError(f"TRAINER.CLIP_LORA.PARAMS must name some of {', '.join(PROJECTIONS)}, "
                            f"got {list(c.PARAMS)}")
        if c.RANK < 1 or not 0 <= c.DROPOUT < 1 or c.ITERS_PER_SHOT < 0:
            raise UserError("TRAINER.CLIP_LORA: RANK must be 1 or more, DROPOUT in [0, 1), "
                            "ITERS_PER_SHOT 0 or more")

    def build_model(self):
        cfg, c = self.cfg, self.cfg.TRAINER.CLIP_LORA
        clip_model = self.clip_model = self.load_clip()
        for p in clip_model.parameters():
            p.requires_grad_(False)
        if c.LOGIT_SCALE > 0:
            self.logit_scale = float(c.LOGIT_SCALE)
        towers = {"text": text_tower(clip_model), "visual": clip_model.visual}
        wanted = {"both": ("text", "visual"), "text": ("text",), "vision": ("visual",)}[c.ENCODER]
        self.lora = nn.ModuleDict()
        for name in wanted:
            adapters = add_lora(towers[name], c.RANK, c.ALPHA, c.DROPOUT, list(c.PARAMS),
                                c.POSITION, c.SCALING)
            if len(adapters) == 0:
                raise UserError(f"backbone {cfg.MODEL.BACKBONE.NAME}'s {name} tower has no "
                                "attention layers LoRA can adapt (a ResNet image tower); use a ViT "
                                "backbone or set TRAINER.CLIP_LORA.ENCODER text")
            self.lora[name] = adapters
        n_params = sum(p.numel() for p in self.lora.parameters())
        print("LoRA on " + ", ".join(f"{len(a)} {n} blocks" for n, a in self.lora.items())
              + f" ({', '.join(c.PARAMS)}; rank {c.RANK}; {n_params:,} parameters)")
        self.text_encoder = TextEncoder(clip_model)
        texts = [templates_for(task, c.TEMPLATES)[0].format(name.replace("_", " "))
                 for task in self.tasks for name in task.classnames]
        self.class_tokens = text_tower(clip_model).tokenize(texts).to(self.device)
        self.model = self.lora
        optim = adamw(self.lora.parameters(), cfg.OPTIM)
        self.total_iters = self._plan_iterations()
        self.register_model("lora", self.lora, optim,
                            cosine_per_iteration(optim, self.total_iters, c.ETA_MIN))

    def _plan_iterations(self):
        """ITERS_PER_SHOT x shots iterations (the last epoch cut short), or MAX_EPOCH epochs."""
        c, shots = self.cfg.TRAINER.CLIP_LORA, self.cfg.DATASET.NUM_SHOTS
        batches = len(self.train_loader_x) if self.train_loader_x is not None else 1
        if c.ITERS_PER_SHOT > 0 and shots > 0:
            total = c.ITERS_PER_SHOT * shots
            self.max_epoch = epochs_for(total, batches)
            print(f"Training for {total:,} iterations ({c.ITERS_PER_SHOT} x {shots} shots; "
                  f"{self.max_epoch} epochs of {batches} batches)")
            return total
        return self.max_epoch * batches

    def run_epoch(self):
        loader = self.train_loader_x
        left = self.total_iters - self.epoch * len(loader) if loader is not None else 0
        if loader is not None and left < len(loader):
            self.train_loader_x = Truncated(loader, left)
        try:
            return super().run_epoch()
        finally:
            self.train_loader_x = loader

    # ---- features --------------------------------------------------------------

    def encode_text_classes(self, classes=None):
        """Normalised features of the class prompts (all, or global indices ``classes``)
        through the adapted text tower."""
        tokens = self.class_tokens if classes is None else self.class_tokens[classes]
        emb = text_tower(self.clip_model).embed(tokens)
        return F.normalize(self.text_encoder(emb, tokens).float(), dim=-1)

    def encode_image_adapted(self, image):
        return F.normalize(self.clip_model.encode_image(image).float(), dim=-1)

    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        text = self.split_over_ranks(self.encode_text_classes, classes)
        logits = self.logit_scale * self.encode_image_adapted(image) @ text.t()
        loss, logits, target = self.task_loss(logits, label, task, classes)
        return loss, logits, target, {}

    def class_text_features(self):
        return self.encode_text_classes()

    @torch.no_grad()
    def model_inference(self, image):
        """On images only (not marked accepts_features): the adapted image tower."""
        if self._eval_text is None:
            with self.autocast():
                self._eval_text = self.class_text_features().float()
        with self.autocast():
            feats = self.encode_image_adapted(image)
        return self.logit_scale * feats @ self._eval_text.t()

    def results_extra(self):
        c = self.cfg.TRAINER.CLIP_LORA
        return {"lora": {"rank": c.RANK, "params": list(c.PARAMS), "encoder": c.ENCODER,
                         "iterations": self.total_iters,
                         "adapted_blocks": {n: len(a) for n, a in self.lora.items()}}}


@register_method
class CLIPLoRAMethod(Method):
    name = "clip_lora"
    trainer = "CLIPLoRA"
    label = "CLIP-LoRA"
    colour = "grey"
    family = "CLIPLoRA"
    order = 92
    variants = ("default",)
    default_variant = "default"
    protocols = ("fewshot",)

    def setting(self, ctx, variant):
        # 500 x shots iterations on the real backbones; 10 x shots on the tiny demo ones
        return Setting(self.trainer, self.schedule(ctx, "it500", tiny="it10"), variant)
