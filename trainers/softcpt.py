"""SoftCPT (Ding et al., arXiv 2208.13474): soft context sharing for
multi-task prompt tuning.

A task prompt ``[X]*TASK_N_CTX <task name>.`` (learnable task context, shared
by all tasks "TA" or one per task "TS") goes through the frozen text encoder;
a meta network maps its feature to the context of the task's class prompts
``[ctx]*N_CTX <class name>.``, so related tasks share knowledge through the
meta network. "NA" variants give all classes of a task the same context;
class-aware variants ("CA" shared / "CS" class-specific class context) also
feed the meta network a class feature from ``[X]*CLASS_N_CTX <class name>.``
(as upstream, with the period), which yields one context per class; the meta
network's input is ``[class feature, task feature]``, upstream's order, so a
meta-network weight carries over between the two codes unchanged.

Training encodes only the tasks present in the batch (the loss never needs
the others), and evaluation encodes every class prompt once per pass.

Class sampling (``CLS_SAMPLE_RATE`` r in (0, 1), class-aware variants on large
suites): each step keeps the batch's labels and, for every task present in the
batch, ``ceil(r * n)`` of its n other classes (so a task keeps at least one
negative when it has one), as upstream does per task. Upstream also samples
classes of tasks absent from the batch; the per-task loss never uses those
classes (each sample's softmax is over its own task), so they are not drawn
(nor encoded) here.
"""
import math
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.errors import UserError, check_choice

from .base import ClipTrainer
from .feature_cache import accepts_features
from .clip_model import (PromptAssembler, TextEncoder, context_init, embed_dim, text_tower,
                         text_width)

# (CLASS_N_CTX, CLASS_CSC, TASK_N_CTX, TASK_CSC, N_CTX, CSC) per variant.
# First two letters: class side (NA none, CA shared class context, CS
# class-specific); last two: task side (TA shared task context, TS per task).
VARIANTS = {
    "NATA": (0, False, 4, False, 16, False),
    "NATS": (0, False, 4, True, 16, False),
    "CATA": (4, False, 4, False, 16, True),
    "CSTA": (4, True, 4, False, 16, True),
    "CATS": (4, False, 4, True, 16, True),
    "CSTS": (4, True, 4, True, 16, True),
}
VARIANT_KEYS = ("CLASS_N_CTX", "CLASS_CSC", "TASK_N_CTX", "TASK_CSC", "N_CTX", "CSC")
META_NETS = ("linear", "mlp")
TASK_INPUTS = ("name", "description")


def extend_cfg(cfg):
    cfg.TRAINER.SOFTCPT = CN()
    # A variant name (NATA NATS CATA CSTA CATS CSTS) sets the six keys below;
    # "" uses them as given.
    cfg.TRAINER.SOFTCPT.VARIANT = "NATA"
    cfg.TRAINER.SOFTCPT.CLASS_N_CTX = 0  # class-feature context length (0: not class-aware)
    cfg.TRAINER.SOFTCPT.CLASS_CSC = False  # class-specific class-feature context ("CS")
    cfg.TRAINER.SOFTCPT.TASK_N_CTX = 4  # task-prompt context length
    cfg.TRAINER.SOFTCPT.TASK_CSC = False  # one task context per task ("TS")
    cfg.TRAINER.SOFTCPT.N_CTX = 16  # class-prompt context length (meta-network output)
    cfg.TRAINER.SOFTCPT.CSC = False  # one class-prompt context per class (class-aware only)
    cfg.TRAINER.SOFTCPT.META_NET = "linear"  # linear (the paper) | mlp
    # Per task of the batch, ceil(rate x its other classes) are sampled each
    # step besides the batch's labels (always kept); 0 or 1 = all classes.
    # Upstream uses 0.1 for the class-aware variants on General-10.
    cfg.TRAINER.SOFTCPT.CLS_SAMPLE_RATE = 0.0
    cfg.TRAINER.SOFTCPT.TASK_INPUT = "name"  # text after the task context: name | description
    # Optional words (e.g. "a photo of a") whose embeddings are added, frozen,
    # to the meta network's output, so class prompts start from a hand-crafted
    # prompt (sets N_CTX to their token count; the meta network's last layer
    # then starts at zero). "" = the paper's method.
    cfg.TRAINER.SOFTCPT.CTX_INIT = ""
    cfg.TRAINER.SOFTCPT.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)


def resolve_variant(cfg_soft):
    """The six structural settings as a dict, with VARIANT applied."""
    name = cfg_soft.VARIANT
    if name:
        if name not in VARIANTS:
            raise UserError(f"TRAINER.SOFTCPT.VARIANT must be one of {', '.join(VARIANTS)} or "
                            f"'' (use the keys as given), got '{name}'")
        return dict(zip(VARIANT_KEYS, VARIANTS[name]))
    return {k: cfg_soft[k] for k in VARIANT_KEYS}


def variant_name(settings):
    """NATA ... CSTS for a settings dict (None when it is not one of the six)."""
    for name, values in VARIANTS.items():
        if tuple(settings[k] for k in VARIANT_KEYS) == values:
            return name
    return None


def task_text(task, mode):
    """The words after the task context: the task's prompt name (as upstream:
    Fashion-20's "pants type"), else its name made readable ("OxfordPets" ->
    "oxford pets"), or the task's one-line description."""
    if mode == "description" and task.description:
        return task.description.strip().rstrip(".")
    if getattr(task, "prompt_name", ""):
        return task.prompt_name.strip()
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", task.name)
    return " ".join(words.replace("_", " ").replace("-", " ").split()).lower()


def build_meta_net(kind, in_dim, out_dim):
    if kind == "linear":
        net = nn.Linear(in_dim, out_dim, bias=False)
    elif kind == "mlp":
        hidden = max(in_dim // 4, 1)
        net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                            nn.Linear(hidden, out_dim, bias=False))
    else:
        raise UserError(f"TRAINER.SOFTCPT.META_NET must be one of {META_NETS}, got '{kind}'")
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


class SoftPromptLearner(nn.Module):
    """Task context, optional class-feature context and the meta network.

    ``forward(classes)`` returns the class-prompt embeddings of ``classes``
    (global indices), encoding only the task prompts (and class features)
    those classes need; ``text_encoder`` is passed in so it is not
    registered (it is frozen CLIP and never saved).
    """

    def __init__(self, settings, meta_kind, tasks, clip_model, task_input="name", ctx_init=""):
        super().__init__()
        s = settings
        device = text_tower(clip_model).device
        classnames = [c for t in tasks for c in t.classnames]
        n_tasks, n_cls = len(tasks), len(classnames)
        ctx_dim = text_width(clip_model)
        feat_dim = embed_dim(clip_model)
        self.class_aware = s["CLASS_N_CTX"] > 0
        if s["CSC"] and not self.class_aware:
            raise UserError("TRAINER.SOFTCPT.CSC True needs class-aware prompts "
                            "(CLASS_N_CTX > 0): a class-agnostic meta network gives one "
                            "context per task")
        if s["TASK_N_CTX"] < 1 or s["N_CTX"] < 1:
            raise UserError("TRAINER.SOFTCPT.TASK_N_CTX and N_CTX must be at least 1")
        base, prefix = context_init(clip_model, s["N_CTX"], ctx_init)
        self.n_ctx, self.ctx_dim = base.shape[0], ctx_dim
        # Frozen offset of the generated context: the init words, or none.
        self.register_buffer("ctx_base", (base if ctx_init else torch.zeros_like(base)).to(device),
                             persistent=False)
        self.csc = bool(s["CSC"])
        self.register_buffer("owner", torch.tensor(
            [i for i, t in enumerate(tasks) for _ in t.classnames], device=device),
            persistent=False)

        task_ctx, _ = context_init(clip_model, s["TASK_N_CTX"],
                                   n_copies=n_tasks if s["TASK_CSC"] else None)
        self.task_ctx = nn.Parameter(task_ctx.to(device))
        self.task_prompts = PromptAssembler(clip_model, [task_text(t, task_input) for t in tasks],
                                            s["TASK_N_CTX"])
        if self.class_aware:
            class_ctx, _ = context_init(clip_model, s["CLASS_N_CTX"],
                                        n_copies=n_cls if s["CLASS_CSC"] else None)
            self.class_ctx = nn.Parameter(class_ctx.to(device))
            # "X X X X <class name>." as upstream (the period changes the feature)
            self.class_feature_prompts = PromptAssembler(clip_model, classnames,
                                                         s["CLASS_N_CTX"])
        in_dim = feat_dim * (2 if self.class_aware else 1)
        self.meta_net = build_meta_net(meta_kind, in_dim, self.n_ctx * ctx_dim).to(device)
        if ctx_init:  # start exactly at the hand-crafted prompt; gradients still reach W
            last = [m for m in self.meta_net.modules() if isinstance(m, nn.Linear)][-1]
            nn.init.zeros_(last.weight)
        self.class_prompts = PromptAssembler(clip_model, classnames, self.n_ctx,
                                             prompt_prefix=prefix)

    @staticmethod
    def _pick(ctx, index):
        return ctx if ctx.dim() == 2 else ctx[index]

    def task_features(self, text_encoder, task_index):
        ctx = self._pick(self.task_ctx, task_index)
        prompts = self.task_prompts(ctx, task_index)
        return text_encoder(prompts, self.task_prompts.tokens(task_index))

    def class_features(self, text_encoder, classes):
        ctx = self._pick(self.class_ctx, classes)
        prompts = self.class_feature_prompts(ctx, classes)
        return text_encoder(prompts, self.class_feature_prompts.tokens(classes))

    def contexts(self, text_encoder, classes):
        """Class-prompt context (len(classes), N_CTX, ctx_dim)."""
        owner = self.owner[classes]
        tasks, position = torch.unique(owner, return_inverse=True)
        task_feat = self.task_features(text_encoder, tasks)
        if self.class_aware:
            meta_in = torch.cat([self.class_features(text_encoder, classes),
                                 task_feat[position]], dim=-1)
            return self.ctx_base + self.meta_net(meta_in).view(-1, self.n_ctx, self.ctx_dim)
        # NA: one context per task, shared by its classes.
        per_task = self.meta_net(task_feat).view(-1, self.n_ctx, self.ctx_dim)
        return self.ctx_base + per_task[position]

    def forward(self, text_encoder, classes):
        return self.class_prompts(self.contexts(text_encoder, classes), classes)


@TRAINER_REGISTRY.register()
class SoftCPT(ClipTrainer):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "SOFTCPT"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        c = cfg.TRAINER.SOFTCPT
        self.settings = resolve_variant(c)
        if not 0.0 <= c.CLS_SAMPLE_RATE <= 1.0:
            raise UserError(f"TRAINER.SOFTCPT.CLS_SAMPLE_RATE must be in [0, 1], "
                            f"got {c.CLS_SAMPLE_RATE}")
        check_choice("TRAINER.SOFTCPT.TASK_INPUT", c.TASK_INPUT, TASK_INPUTS)
        check_choice("TRAINER.SOFTCPT.META_NET", c.META_NET, META_NETS)

    def build_model(self):
        c = self.cfg.TRAINER.SOFTCPT
        clip_model = self.clip_model = self.load_clip()
        name = variant_name(self.settings) or "custom"
        print(f"Building SoftCPT ({name}: " + ", ".join(
            f"{k}={v}" for k, v in self.settings.items()) + f", meta net {c.META_NET})")
        # what each task's prompt says after its context (the meta network's input): a task
        # named e.g. "FMNIST" reads "fmnist", so say it (docs/softcpt_task_text.md)
        print(f"SoftCPT task texts (TRAINER.SOFTCPT.TASK_INPUT {c.TASK_INPUT}; set by the "
              "dataset's task_prompt_name / task_description):")
        for t in self.tasks:
            print(f"  {t.name}: \"{task_text(t, c.TASK_INPUT)}\"")
        self.prompt_learner = SoftPromptLearner(self.settings, c.META_NET, self.tasks,
                                                clip_model, c.TASK_INPUT, c.CTX_INIT)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner
        # All trainable parameters in one model: one optimizer, one step per batch.
        self.register_trainable("prompt_learner", self.prompt_learner)

    def results_extra(self):
        return {"variant": variant_name(self.settings) or "custom",
                "softcpt": dict(self.settings, META_NET=self.cfg.TRAINER.SOFTCPT.META_NET)}

    def encode_classes(self, classes):
        """Normalised text features of the global class indices ``classes``."""
        prompts = self.prompt_learner(self.text_encoder, classes)
        tokens = self.prompt_learner.class_prompts.tokens(classes)
        return F.normalize(self.text_encoder(prompts, tokens).float(), dim=-1)

    def text_features(self, classes):
        """``encode_classes``; under DDP each rank encodes its share of the classes
        (and the task prompts those need; ClipTrainer.split_over_ranks)."""
        return self.split_over_ranks(self.encode_classes, classes)

    def sample_classes(self, classes, label):
        """The batch's labels plus, for every task among ``classes``,
        ceil(CLS_SAMPLE_RATE x its other classes) drawn at random."""
        rate = self.cfg.TRAINER.SOFTCPT.CLS_SAMPLE_RATE
        if rate <= 0 or rate >= 1:
            return classes
        keep = torch.isin(classes, label)
        owner = self.owner[classes]
        picked = [classes[keep]]
        for t in torch.unique(owner).tolist():
            negatives = classes[~keep & (owner == t)]
            # round() first: 0.3 * 10 is 3.0000000000000004 in floating point
            n = math.ceil(round(rate * negatives.numel(), 9))
            order = torch.randperm(negatives.numel(), device=negatives.device)
            picked.append(negatives[order[:n]])
        return torch.sort(torch.cat(picked)).values

    @accepts_features
    def forward_train(self, image, label, task, classes=None):
        """``classes`` defaults to the classes of the batch's tasks; passing
        all classes gives the same loss (used by the tests)."""
        if classes is None:
            classes = self.sample_classes(self.batch_classes(task), label)
        logits = self.logit_scale * self.image_features(image) @ self.text_features(classes).t()
        loss, logits, target = self.task_loss(logits, label, task, classes)
        return loss, logits, target, {}

    @torch.no_grad()
    def class_text_features(self, chunk=512):
        # Chunks bound the memory of encoding thousands of class prompts at once.
        every = torch.arange(self.num_classes, device=self.device)
        return self.split_over_ranks(self.encode_classes, every, same_on_all_ranks=True,
                                     chunk=chunk)


@register_method
class SoftCPTMethod(Method):
    """Variants: VARIANT or VARIANT_csr<RATE> (TRAINER.SOFTCPT.CLS_SAMPLE_RATE). The
    default rate is 0.1 for the class-aware variants on general10 (upstream's README),
    0 otherwise; the folder names the rate only when it is not the default."""
    name, trainer, label, colour, order = "softcpt", "SoftCPT", "SoftCPT", "vermillion", 10
    headline = True
    variants, default_variant = ("NATA", "NATS", "CATA", "CSTA", "CATS", "CSTS"), "NATA"
    multi_task = True
    script_args = ("VARIANT",)
    script_usage = ("[VARIANT]: NATA (default) NATS CATA CSTA CATS CSTS; CLS_SAMPLE_RATE=R "
                    "in the environment sets the class sampling rate")
    PATTERN = re.compile(r"(NATA|NATS|CATA|CSTA|CATS|CSTS)(?:_csr(0*\.[0-9]+|[01](?:\.0*)?))?")

    def parse_variant(self, variant):
        variant = variant or self.default_variant
        m = self.PATTERN.fullmatch(variant)
        if not m:
            raise UserError(f"unknown variant '{variant}' of method softcpt; choose from "
                            f"{', '.join(self.variants)}, optionally with _csr<RATE in [0, 1]> "
                            "(class sampling rate)")
        return m.groups()

    def variant_from_args(self, args):
        variant = super().variant_from_args(args)
        rate = os.environ.get("CLS_SAMPLE_RATE", "")
        if rate:
            if not re.fullmatch(r"0*\.[0-9]+|[01](\.0*)?", rate):
                raise UserError(f"CLS_SAMPLE_RATE must be a number in [0, 1], got '{rate}'")
            variant = f"{variant}_csr{rate}"
        return variant

    def setting(self, ctx, variant):
        name, rate = self.parse_variant(variant)
        default = "0.1" if name[:2] in ("CA", "CS") and ctx.dataset == "general10" else "0.0"
        rate = rate or default
        if "." not in rate:
            rate += ".0"  # the config key is a float
        folder = name if float(rate) == float(default) else f"{name}_csr{rate}"
        # The paper's 50 epochs for every shot count; the tiny demo backbones use 10.
        return Setting(self.trainer, self.schedule(ctx, "ep50"), folder,
                       ["TRAINER.SOFTCPT.VARIANT", name, "TRAINER.SOFTCPT.CLS_SAMPLE_RATE", rate])

    def table_label(self, variant, config=""):
        return f"SoftCPT-{variant}"
