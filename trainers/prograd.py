"""ProGrad (Zhu et al., ICCV 2023, "Prompt-aligned Gradient for Prompt Tuning").

The student is CoOp (one generic context, class token at the end). A frozen
zero-shot teacher (each task's hand-crafted template, as ZS-CLIP's "task" mode)
gives soft targets; the distillation loss is the soft-target cross-entropy at
temperature T (times T^2), whose gradient is the KL gradient. Per step, the
gradient of the cross-entropy is projected onto the normal plane of the KL
gradient when the two conflict (cos < 0), scaled by LAMBDA; the KL gradient is
never added. One optimizer step per batch, with the projected gradient.

The teacher reads the same frozen image features as the student (one image
pass, or the feature cache with FEATURE_CACHE.TRAIN_VIEWS). On a multi-task
suite both losses are per sample over its own task's classes.
"""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.metrics import compute_accuracy

from .clip_model import PromptAssembler, TextEncoder, text_tower
from .coop import CoOp
from .feature_cache import accepts_features
from .templates import hand_crafted_features, templates_for

GENERIC_WORDS = "a photo of a"  # a suite whose tasks' templates differ


def extend_cfg(cfg):
    cfg.TRAINER.PROGRAD = CN()
    cfg.TRAINER.PROGRAD.N_CTX = 16  # number of context vectors
    # "template": the dataset's hand-crafted template before "{}" fills the LAST context
    # slots (one per word), the leading ones are zero vectors (upstream's CTX_INIT True);
    # a suite whose tasks' templates differ uses "a photo of a". Other words: those words.
    # "": random N(0, 0.02) (upstream's CTX_INIT False).
    cfg.TRAINER.PROGRAD.CTX_INIT = "template"
    cfg.TRAINER.PROGRAD.LAMBDA = 1.0  # projection strength (0.8: upstream's 8/16-shot
    #   Flowers102, DTD, EuroSAT)
    cfg.TRAINER.PROGRAD.T = 1.0  # distillation temperature
    cfg.TRAINER.PROGRAD.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)
    declare_neutral("TRAINER.PROGRAD", cfg.TRAINER.PROGRAD)  # a new group: runs keep their ids


def template_words(tasks):
    """The words of the tasks' first template before "{}" (one template for all)."""
    words = {templates_for(t, "task")[0].split("{}")[0].replace("_", " ").strip()
             for t in tasks}
    return words.pop() if len(words) == 1 else GENERIC_WORDS


def prograd_projection(g_ce, g_kl, lam):
    """The cross-entropy gradient ``g_ce`` with its component along the KL gradient
    ``g_kl`` removed (scaled by ``lam``) when they conflict (g_ce . g_kl < 0), else
    ``g_ce`` unchanged; over the flattened tensor, without a host synchronisation."""
    a, b = g_ce.reshape(-1).float(), g_kl.reshape(-1).float()
    dot = a @ b
    coef = torch.where(dot < 0, lam * dot / (b @ b).clamp_min(1e-30), torch.zeros_like(dot))
    return (a - coef * b).view_as(g_ce).to(g_ce.dtype)


def soft_cross_entropy(student, teacher, temperature):
    """Mean over the batch of sum_c -softmax(teacher/T)_c log_softmax(student/T)_c * T^2.
    Classes at -inf in both (other tasks' classes) contribute nothing."""
    p = F.softmax(teacher.float() / temperature, dim=-1)
    logq = F.log_softmax(student.float() / temperature, dim=-1)
    logq = logq.masked_fill(p == 0, 0.0)
    return -(p * logq).sum(-1).mean() * temperature ** 2


class TemplatePromptLearner(nn.Module):
    """CoOp's prompt learner with ProGrad's initialisation (see CTX_INIT)."""

    def __init__(self, node, classnames, tasks, clip_model):
        super().__init__()
        tower = text_tower(clip_model)
        n_ctx = node.N_CTX
        words = template_words(tasks) if node.CTX_INIT == "template" else node.CTX_INIT.strip()
        ctx = torch.empty(n_ctx, tower.width)
        if words:
            k = len(words.split())
            if k > n_ctx:
                raise UserError(f"TRAINER.PROGRAD.CTX_INIT '{words}' has {k} words, more than "
                                f"TRAINER.PROGRAD.N_CTX {n_ctx}; raise N_CTX")
            with torch.no_grad():
                emb = tower.embed(tower.tokenize([words]))[0].float().cpu()
            ctx.zero_()
            ctx[n_ctx - k:] = emb[1:1 + k]  # words, not BPE tokens: as upstream
            prefix = " ".join(["X"] * (n_ctx - k) + [words])
        else:
            nn.init.normal_(ctx, std=0.02)
            prefix = " ".join(["X"] * n_ctx)
        print(f'Initial context: "{prefix}" (tokens: {n_ctx}; leading slots zero)')
        self.ctx = nn.Parameter(ctx.to(tower.device))
        self.assembler = PromptAssembler(clip_model, classnames, n_ctx, "end", prefix)
        self.n_cls, self.n_ctx = len(classnames), n_ctx

    def forward(self, index=None):
        return self.assembler(self.ctx, index)

    def tokens(self, index=None):
        return self.assembler.tokens(index)


@TRAINER_REGISTRY.register()
class ProGrad(CoOp):
    prec_key = "PROGRAD"
    image_encoder = FROZEN_ENCODER

    @classmethod
    def trains_on_features(cls):
        # forward_backward below reads images only through forward_train
        return True

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.PROGRAD
        if node.T <= 0 or node.LAMBDA < 0 or node.N_CTX < 1:
            raise UserError(f"TRAINER.PROGRAD: T must be > 0, LAMBDA >= 0 and N_CTX >= 1 "
                            f"(got T {node.T}, LAMBDA {node.LAMBDA}, N_CTX {node.N_CTX})")

    def build_model(self):
        clip_model = self.clip_model = self.load_clip()
        self.node = self.cfg.TRAINER.PROGRAD
        print("Building the student (CoOp) and the zero-shot teacher")
        self.prompt_learner = TemplatePromptLearner(self.node, self.dm.dataset.classnames,
                                                    self.tasks, clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner
        self.register_trainable("prompt_learner", self.prompt_learner)
        # the teacher's class features, once, in fp32 (upstream's teacher is fp32 CLIP)
        self.teacher_text = hand_crafted_features(clip_model, self.tasks, "task").float()

    def teacher_logits(self, feats, classes):
        """Zero-shot logits of normalised image ``feats`` over ``classes``."""
        return self.logit_scale * feats.float() @ self.teacher_text[classes].t()

    @accepts_features
    def forward_train(self, image, label, task):
        classes = self.batch_classes(task)
        feats = self.image_features(image)
        logits = self.logit_scale * feats @ self.text_features(classes).t()
        ce, logits, target = self.task_loss(logits, label, task, classes)
        teacher = self.teacher_logits(feats, classes)
        if len(self.tasks) > 1:
            from toolbox.metrics.per_task import restrict_to_own_task

            teacher = restrict_to_own_task(teacher, task, self.owner[classes])
        kl = soft_cross_entropy(logits, teacher, self.node.T)
        return ce, logits, target, {"ce": ce, "kl": kl}

    def forward_backward(self, batch):
        image, label, task = self.parse_batch_train(batch)
        with self.autocast():
            ce, logits, target, extra = self.forward_train(image, label, task)
        self.prograd_step(ce, extra["kl"])
        summary = {"loss": ce.item(), "kl": extra["kl"].item(),
                   "acc": compute_accuracy(logits.float(), target)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def _backward(self, loss, retain_graph=False):
        loss = self.ddp_weighted(loss)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward(
            retain_graph=retain_graph)
        self.sync_gradients()  # DDP: the projection sees the global gradients

    def prograd_step(self, ce, kl):
        """Gradients of KL then CE, the projection, one optimizer step."""
        self.detect_anomaly(ce)
        self.detect_anomaly(kl)
        params = [p for p in self.prompt_learner.parameters() if p.requires_grad]
        self.model_zero_grad()
        self._backward(kl, retain_graph=True)
        g_kl = [None if p.grad is None else p.grad.detach().clone() for p in params]
        self.model_zero_grad()
        self._backward(ce)
        for p, g in zip(params, g_kl):
            if p.grad is not None and g is not None:
                p.grad = prograd_projection(p.grad, g, self.node.LAMBDA)
        for name in self.get_model_names():
            optim = self._optims[name]
            if optim is not None:
                optim.step() if self.scaler is None else self.scaler.step(optim)
        if self.scaler is not None:
            self.scaler.update()


LAMBDA_08 = ("oxford_flowers", "dtd", "eurosat")  # upstream README: lambda 0.8 at 8/16 shots


@register_method
class ProGradMethod(Method):
    name, trainer = "prograd", "ProGrad"
    label, colour, order = "ProGrad", "yellow", 32
    variants, default_variant = ("default",), "default"
    protocols = ("fewshot", "base2new", "xd", "dg")
    # base-to-new: upstream's rn50_ep100 (4 shots); xd/dg: no upstream recipe, CoOp's 50
    protocol_schedule = {"base2new": ("ep100", "ep10"), "default": ("ep50", "ep10")}
    bench_against = "coop"  # benchmarks/baselines.py: the step it adds cost to
    in_comparison = True

    def setting(self, ctx, variant):
        if ctx.tiny:
            schedule = "ep10"
        elif ctx.protocol == "base2new":
            schedule = "ep100"
        else:  # upstream: 50 / 100 / 200 epochs for 1 / 2-4 / 8-16 shots
            schedule = "ep50" if ctx.shots <= 1 else "ep100" if ctx.shots <= 4 else "ep200"
        lam = 0.8 if ctx.dataset in LAMBDA_08 and ctx.shots >= 8 and \
            ctx.protocol == "fewshot" else 1.0
        return Setting("ProGrad", f"{ctx.backbone}_{schedule}", f"nctx16_lambda{lam}",
                       ["TRAINER.PROGRAD.LAMBDA", str(lam)])

    def table_label(self, variant, config=""):
        # the folder names the recipe's lambda; one method row whatever it is
        return self.label if re.fullmatch(r"nctx\d+_lambda[0-9.]+", variant) else \
            f"{self.label} ({variant})"
