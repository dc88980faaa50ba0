"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of the
few-shot training images added to zero-shot CLIP,

    logits = s f W^T + alpha * exp(-beta (1 - f K^T)) V,

f the normalised image feature, W the class text features (hand-crafted template), K the
cache keys (each training image's feature averaged over AUGMENT_EPOCH augmented views,
then normalised), V their one-hot labels, s CLIP's logit scale. Tip-Adapter is training
free; Tip-Adapter-F fine-tunes the keys (AdamW, cosine per iteration). alpha and beta are
searched on a grid, on the few-shot validation split only (upstream searches ImageNet's on
test features and keeps -F's best epoch by test accuracy: not here). In a suite every task
has its own alpha and beta, searched on its own val images with its own metric.

The image encoder is frozen: keys and -F's training batches are the feature cache's
training views (FEATURE_CACHE.TRAIN_VIEWS, trainers/feature_cache.py), evaluation reads
the cache.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.data.data_manager import build_data_loader
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError, check_choice
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.metrics.per_task import task_metric
from toolbox.utils import progress

from .base import ClipTrainer
from . import feature_cache
from .feature_cache import accepts_features
from .iteration_schedule import PerIterationSchedule, adamw, cosine_per_iteration
from .templates import TEMPLATE_MODES, hand_crafted_features

# Upstream's per-dataset choices (TA configs/*.yaml): search_scale [beta, alpha], init
# beta, init alpha, by task name; other tasks use the DEFAULT_* keys.
UPSTREAM = {
    "Caltech101": ((12, 5), 1, 3), "DTD": ((13, 13), 1, 2), "EuroSAT": ((12, 10), 1, 2),
    "FGVCAircraft": ((30, 30), 1, 5), "Food101": ((10, 10), 1, 1.17),
    "ImageNet": ((7, 3), 1, 1.17), "OxfordFlowers": ((50, 50), 1, 10),
    "OxfordPets": ((7, 3), 1, 1.17), "StanfordCars": ((20, 10), 1, 3),
    "SUN397": ((12, 10), 1, 1.17), "UCF101": ((7, 3), 1, 3),
}


def extend_cfg(cfg):
    cfg.TRAINER.TIP_ADAPTER = CN()
    cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH = 10  # augmented views averaged into each key
    cfg.TRAINER.TIP_ADAPTER.SEARCH = True  # False: the initial alpha and beta
    cfg.TRAINER.TIP_ADAPTER.SEARCH_STEP = [200, 20]  # grid points [beta, alpha] (upstream)
    # [beta, alpha] grid ranges; []: upstream's value for the task (UPSTREAM), else DEFAULT_
    cfg.TRAINER.TIP_ADAPTER.SEARCH_SCALE = []
    cfg.TRAINER.TIP_ADAPTER.DEFAULT_SEARCH_SCALE = [12.0, 10.0]
    cfg.TRAINER.TIP_ADAPTER.INIT_BETA = 0.0  # 0: upstream's for the task, else DEFAULT_INIT_BETA
    cfg.TRAINER.TIP_ADAPTER.INIT_ALPHA = 0.0  # 0: upstream's for the task, else DEFAULT_INIT_ALPHA
    cfg.TRAINER.TIP_ADAPTER.DEFAULT_INIT_BETA = 1.0
    cfg.TRAINER.TIP_ADAPTER.DEFAULT_INIT_ALPHA = 1.0
    cfg.TRAINER.TIP_ADAPTER.TEMPLATES = "task"  # text classifier templates (trainers/templates.py)
    cfg.TRAINER.TIP_ADAPTER.LOGIT_SCALE = 0.0  # 0: the model's own (100 on OpenAI CLIP, upstream's)
    cfg.TRAINER.TIP_ADAPTER.ADAM_EPS = 1e-4  # Tip-Adapter-F's AdamW eps (upstream)
    cfg.TRAINER.TIP_ADAPTER.PREC = "fp16"  # feature extraction: fp16 | amp | bf16 | fp32
    declare_neutral("TRAINER.TIP_ADAPTER", cfg.TRAINER.TIP_ADAPTER)  # a new group: runs keep ids


def search_grid(scale, steps):
    """Upstream's grid: value_i = i * (scale - 0.1) / steps + 0.1, i = 0 .. steps - 1."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def tip_logits(feats, clip_weights, keys, values, alpha, beta, scale):
    """``scale f W^T + alpha * exp(-beta (1 - f K^T)) V``; ``beta`` a number or one per
    key (NK,), ``alpha`` a number or one per class (C,)."""
    affinity = feats @ keys.t()
    cache = torch.exp(-beta * (1.0 - affinity)) @ values
    return scale * feats @ clip_weights.t() + alpha * cache


class CacheKeys(nn.Module):
    """The cache keys (NK, D): fixed in Tip-Adapter, learnt in Tip-Adapter-F (upstream's
    bias-free nn.Linear initialised with them)."""

    def __init__(self, keys, learn):
        super().__init__()
        self.weight = nn.Parameter(keys.clone(), requires_grad=learn)


@TRAINER_REGISTRY.register()
class TipAdapter(ClipTrainer):
    prec_key = "TIP_ADAPTER"
    image_encoder = FROZEN_ENCODER
    finetune = False  # Tip-Adapter-F: True
    trains_on_images = False

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        c = cfg.TRAINER.TIP_ADAPTER
        check_choice("TRAINER.TIP_ADAPTER.TEMPLATES", c.TEMPLATES, TEMPLATE_MODES)
        for key in ("SEARCH_STEP", "DEFAULT_SEARCH_SCALE") + (("SEARCH_SCALE",) if c.SEARCH_SCALE
                                                               else ()):
            value = list(c[key])
            if len(value) != 2 or min(value) <= 0:
                raise UserError(f"TRAINER.TIP_ADAPTER.{key} must be two positive numbers "
                                f"[beta, alpha], got {value}")
        if c.AUGMENT_EPOCH < 1:
            raise UserError("TRAINER.TIP_ADAPTER.AUGMENT_EPOCH must be 1 or more")

    # ---- the cache ---------------------------------------------------------------

    def build_model(self):
        c = self.cfg.TRAINER.TIP_ADAPTER
        self.clip_model = self.load_clip()
        if c.LOGIT_SCALE > 0:
            self.logit_scale = float(c.LOGIT_SCALE)
        print(f"Encoding class prompts (templates: {c.TEMPLATES})")
        with self.autocast():
            clip_weights = hand_crafted_features(self.clip_model, self.tasks, c.TEMPLATES)
        self.clip_weights = clip_weights.float().to(self.device)
        items = self.dm.dataset.train_x
        if not items:
            raise UserError(f"{type(self).__name__} needs training images for its cache; the "
                            "train split is empty (check DATASET.NUM_SHOTS)")
        keys = self.build_keys(items)
        labels = torch.tensor([it.label for it in items], device=self.device)
        self.values = F.one_hot(labels, self.num_classes).float()
        self.key_task = torch.tensor([it.task for it in items], device=self.device)
        self.adapter = CacheKeys(keys, learn=self.finetune)
        self.model = self.adapter
        self.alpha, self.beta = self.initial_hyperparameters()
        self.searched = None  # per task: the grid's best (beta, alpha, val score)
        if self.finetune:
            optim = adamw([self.adapter.weight], self.cfg.OPTIM, eps=c.ADAM_EPS)
            batches = len(self.train_loader_x) if self.train_loader_x is not None else 1
            self.register_model("adapter", self.adapter, optim,
                                cosine_per_iteration(optim, self.max_epoch * batches))

    def build_keys(self, items):
        """Each training image's features over AUGMENT_EPOCH training views (the feature
        cache's, so -F's training reuses them), averaged, normalised: (NK, D)."""
        n = self.cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH
        print(f"Building the cache: {len(items):,} training images x {n} augmented views")
        views = feature_cache.train_view_features(self, items, n)
        loader = self.train_loader_x
        if (self.finetune and loader is not None and self.cfg.FEATURE_CACHE.TRAIN_VIEWS == n
                and [it.impath for it in loader.dataset.data_source] ==
                [it.impath for it in items]):
            self._train_views = views  # the same views: -F trains on them without re-reading
        return F.normalize(views.mean(0), dim=-1).to(self.device)

    def task_choice(self, task):
        """(search scale [beta, alpha], init beta, init alpha) of ``task``."""
        c = self.cfg.TRAINER.TIP_ADAPTER
        scale, beta, alpha = UPSTREAM.get(task.name, (tuple(c.DEFAULT_SEARCH_SCALE),
                                                      c.DEFAULT_INIT_BETA, c.DEFAULT_INIT_ALPHA))
        scale = tuple(c.SEARCH_SCALE) if c.SEARCH_SCALE else scale
        return (tuple(map(float, scale)), float(c.INIT_BETA or beta),
                float(c.INIT_ALPHA or alpha))

    def initial_hyperparameters(self):
        alpha = torch.tensor([self.task_choice(t)[2] for t in self.tasks], device=self.device)
        beta = torch.tensor([self.task_choice(t)[1] for t in self.tasks], device=self.device)
        return alpha, beta

    def logits(self, feats):
        owner = self.owner  # class -> task
        return tip_logits(feats, self.clip_weights, self.adapter.weight, self.values,
                          self.alpha[owner], self.beta[self.key_task], self.logit_scale)

    # ---- the search (val only) ------------------------------------------------------

    @torch.no_grad()
    def features(self, items, split):
        """Frozen features (test-time transform) of ``items``, from the feature cache
        where there is one; (N, D) tensor on the device."""
        cached = self.cached_features(items, split, progress=True)
        if cached is not None:
            return torch.from_numpy(np.asarray(cached, dtype=np.float32)).to(self.device)
        loader = build_data_loader(self.cfg, "SequentialSampler", data_source=items,
                                   batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=self.dm.tfm_test, is_train=False)
        return torch.cat([self.encode_image(b["img"].to(self.device))
                          for b in progress(loader, f"{split} features")])

    @torch.no_grad()
    def search(self):
        """alpha and beta of every task: the grid point with the best val metric (the
        first in upstream's order, beta outer, alpha inner, on ties). Reads the val split
        only; a task without val images keeps its initial values."""
        c = self.cfg.TRAINER.TIP_ADAPTER
        self.alpha, self.beta = self.initial_hyperparameters()
        self.searched = {}
        if not c.SEARCH:
            return
        val = self.dm.dataset.val or []
        feats = self.features(val, "val") if val else None
        labels = torch.tensor([it.label for it in val], device=self.device)
        tasks = torch.tensor([it.task for it in val], device=self.device)
        keys = self.adapter.weight.detach().float()
        n_beta, n_alpha = (int(x) for x in c.SEARCH_STEP)
        for t, task in enumerate(self.tasks):
            mine = (tasks == t) if val else None
            if mine is None or not bool(mine.any()):
                print(f"Note: task {task.name} has no val images; alpha and beta keep their "
                      f"initial values ({float(self.alpha[t]):.3g}, {float(self.beta[t]):.3g})")
                continue
            (s_beta, s_alpha), _, _ = self.task_choice(task)
            lo, hi = task.label_range
            f = feats[mine]
            y = (labels[mine] - lo).cpu().numpy()
            own = self.key_task == t
            affinity = f @ keys[own].t()
            values = self.values[own][:, lo:hi]
            clip_logits = self.logit_scale * f @ self.clip_weights[lo:hi].t()
            alphas = torch.tensor(search_grid(s_alpha, n_alpha), device=self.device)
            best = (-1.0, None, None)
            for beta in search_grid(s_beta, n_beta):
                cache = torch.exp(-beta * (1.0 - affinity)) @ values
                preds = (clip_logits + alphas[:, None, None] * cache).argmax(-1).cpu().numpy()
                for j, alpha in enumerate(alphas.tolist()):
                    score = task_metric(task.metric, y, preds[j])
                    if score > best[0]:
                        best = (score, beta, alpha)
            score, beta, alpha = best
            self.beta[t], self.alpha[t] = beta, alpha
            self.searched[task.name] = {"beta": beta, "alpha": alpha, "val": score}
            print(f"Task {task.name}: alpha {alpha:.4g}, beta {beta:.4g} (val {task.metric} "
                  f"{score:.2f}; grid {n_beta} x {n_alpha} up to [{s_beta}, {s_alpha}])")

    # ---- running --------------------------------------------------------------------

    def train(self):
        if self.finetune:
            return super().train()
        self.epoch = self.model_epoch = 0  # training free: the cache is the model
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def test(self, split=None):
        if (split or self.cfg.TEST.SPLIT) == "test":
            self.search()  # with the final keys, on val, before the one test pass
        return super().test(split)

    @accepts_features
    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        logits = self.logits(self.image_features(image))[:, classes]
        loss, logits, target = self.task_loss(logits, label, task, classes)
        return loss, logits, target, {}

    @accepts_features
    @torch.no_grad()
    def model_inference(self, image):
        return self.logits(self.image_features(image))

    def results_extra(self):
        return {"alpha": {t.name: float(a) for t, a in zip(self.tasks, self.alpha)},
                "beta": {t.name: float(b) for t, b in zip(self.tasks, self.beta)},
                "search": self.searched or {}}


@TRAINER_REGISTRY.register()
class TipAdapterF(PerIterationSchedule, TipAdapter):
    """Tip-Adapter-F: the keys fine-tuned (values and text weights fixed)."""
    image_encoder = FROZEN_ENCODER  # declared per class: contracts are not inherited
    finetune = True
    trains_on_images = True


@register_method
class TipAdapterMethod(Method):
    name = "tip_adapter"
    trainer = "TipAdapter"
    label = "Tip-Adapter"
    colour = "yellow"
    family = "TipAdapter"
    order = 90
    variants = ("default",)
    default_variant = "default"

    def setting(self, ctx, variant):
        return Setting(self.trainer, ctx.backbone, variant)  # no schedule: nothing trained


@register_method
class TipAdapterFMethod(Method):
    name = "tip_adapter_f"
    trainer = "TipAdapterF"
    label = "Tip-Adapter-F"
    colour = "yellow"
    family = "TipAdapter"
    order = 91
    variants = ("default",)
    default_variant = "default"

    def setting(self, ctx, variant):
        # upstream: 20 epochs (EuroSAT 100); the tiny demo backbones 10
        sched = "ep100" if ctx.dataset == "eurosat" else "ep20"
        return Setting(self.trainer, self.schedule(ctx, sched), variant)
