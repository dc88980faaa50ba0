"""PromptSRC (self-regulating prompts; Khattak et al., ICCV 2023): IVLP's prompts
in both towers, regularised towards the frozen CLIP, and Gaussian-weighted
aggregation of the prompts over epochs (GPA).

Loss (upstream's trainers/promptsrc.py, all on normalised features):
  CE(logits, y)
  + TEXT_LOSS_WEIGHT  * L1(prompted text features, frozen text features)   (mean)
  + IMAGE_LOSS_WEIGHT * L1(prompted image features, frozen image features) (mean)
  + KL(p_frozen || p_prompted) summed and divided by batch x classes (upstream's
    normalisation, a factor C below "batchmean"),
where the frozen text feature of a class is the mean of the unnormalised frozen
features of PROMPTSRC_TEMPLATES (60 templates), then normalised; frozen logits
= logit scale x frozen image @ frozen text.

GPA: weights w_e ~ N(e; GPA_MEAN, GPA_STD) for epochs e = 1..MAX_EPOCH, normalised to
sum 1; after each epoch the *prompt parameters* (the trainable ones) are added with
w_e, and after the last epoch the prompts become the sum. Upstream sums the whole
model state dict, frozen CLIP weights included (in fp16): the frozen weights come out
unchanged only up to rounding, so summing the prompts alone is the intended result
without that artefact. The running sum is in every checkpoint (exact resume).
"""

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError
from toolbox.methods import ImageEncoder, Method, Setting, register_method
from toolbox.metrics.per_task import restrict_to_own_task

from .clip_model import text_tower
from .ivlp import IVLP, refuse_resnets
from .templates import PROMPTSRC_TEMPLATES
from .vl_prompts import add_vl_keys


def extend_cfg(cfg):
    cfg.TRAINER.PROMPTSRC = CN()
    add_vl_keys(cfg.TRAINER.PROMPTSRC, n_ctx=4, depth=9)  # PS train.py / configs
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25.0  # L1 to the frozen text features
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10.0  # L1 to the frozen image features
    cfg.TRAINER.PROMPTSRC.GPA = True  # Gaussian-weighted prompt aggregation over epochs
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15.0  # mean of the epoch weights (epochs count from 1)
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1.0  # their standard deviation
    declare_neutral("TRAINER.PROMPTSRC", cfg.TRAINER.PROMPTSRC)  # a new group: runs keep ids


def gpa_weights(max_epoch, mean, std):
    """w_e for e = 1..max_epoch: a Gaussian density at e, normalised to sum 1 (in log
    space, so epochs far from the mean never underflow to an all-zero sum)."""
    logs = torch.tensor([-0.5 * ((e - mean) / std) ** 2 for e in range(1, max_epoch + 1)],
                        dtype=torch.float64)
    return torch.softmax(logs, dim=0).tolist()


def frozen_template_features(clip_model, classnames, templates, batch_size=256):
    """(C, d) normalised: per class the mean over ``templates`` of the *unnormalised*
    frozen text features (upstream's order: average, then normalise)."""
    tower = text_tower(clip_model)
    total = None
    with torch.no_grad():
        for template in templates:
            texts = [template.format(c.replace("_", " ")) for c in classnames]
            tok = tower.tokenize(texts).to(tower.device)
            out = torch.cat([clip_model.encode_text(tok[i:i + batch_size]).float()
                             for i in range(0, len(texts), batch_size)])
            total = out if total is None else total + out
    return F.normalize(total / len(templates), dim=-1)


def kl_frozen_to_prompted(logits, zs_logits, valid=None):
    """sum p_zs (log p_zs - log p) / logits.numel(): upstream's F.kl_div(log_softmax(
    logits), log_softmax(zs_logits), reduction="sum", log_target=True) / numel.
    ``valid`` (B, C) bool: classes of each sample's own task (others count 0)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logq = F.log_softmax(zs_logits.float(), dim=-1)
    terms = logq.exp() * (logq - logp)
    if valid is not None:
        terms = torch.where(valid, terms, torch.zeros_like(terms))
    return terms.sum() / logits.numel()


def src_losses(logits, zs_logits, img, zs_img, text, zs_text, node, valid=None):
    """The three self-regularisation terms, weighted as upstream weighs them."""
    l_text = F.l1_loss(F.normalize(text, dim=-1), F.normalize(zs_text, dim=-1),
                       reduction="mean") * node.TEXT_LOSS_WEIGHT
    l_image = F.l1_loss(F.normalize(img, dim=-1), F.normalize(zs_img, dim=-1),
                        reduction="mean") * node.IMAGE_LOSS_WEIGHT
    l_kl = kl_frozen_to_prompted(logits, zs_logits, valid)
    return l_text, l_image, l_kl


@TRAINER_REGISTRY.register()
class PromptSRC(IVLP):
    prec_key = "PROMPTSRC"
    image_encoder = ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.PROMPTSRC
        if node.GPA and node.GPA_STD <= 0:
            raise UserError(f"TRAINER.PROMPTSRC.GPA_STD must be > 0, got {node.GPA_STD}")
        for key in ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT"):
            if node[key] < 0:
                raise UserError(f"TRAINER.PROMPTSRC.{key} must be >= 0, got {node[key]}")

    def build_model(self):
        super().build_model()
        print(f"Encoding the frozen text features ({len(PROMPTSRC_TEMPLATES)} templates)")
        self.frozen_text = frozen_template_features(self.clip_model, self.dm.dataset.classnames,
                                                    PROMPTSRC_TEMPLATES).to(self.device)
        self.gpa_sum = None  # {name: tensor}: the weighted prompts of the epochs so far

    def forward_train(self, image, label, task):
        node = self.node
        classes = self.batch_classes(task)
        logits, img, text = self.prompted_logits(image, classes)
        with torch.no_grad():  # the frozen CLIP on the same (augmented) images
            zs_img = F.normalize(self.clip_model.encode_image(image).float(), dim=-1)
            zs_text = self.frozen_text[classes]
            zs_logits = self.logit_scale * zs_img @ zs_text.t()
        valid = None
        if len(self.tasks) > 1:
            valid = torch.isfinite(restrict_to_own_task(logits, task, self.owner[classes]))
            zs_logits = zs_logits.masked_fill(~valid, float("-inf"))
        ce, masked, target = self.task_loss(logits, label, task, classes)
        if valid is not None:
            logits = masked
        l_text, l_image, l_kl = src_losses(logits, zs_logits, img, zs_img, text, zs_text, node,
                                           valid)
        loss = ce + l_text + l_image + l_kl
        return loss, masked, target, {"ce": ce, "l1_text": l_text, "l1_image": l_image,
                                      "kl": l_kl}

    # ---- Gaussian-weighted prompt aggregation --------------------------------------

    def gpa_params(self):
        """The aggregated tensors: the prompt learner's trainable parameters only."""
        return {n: p for n, p in self.prompt_learner.named_parameters() if p.requires_grad}

    def after_epoch(self):
        node = self.node
        if node.GPA:
            w = gpa_weights(self.max_epoch, node.GPA_MEAN, node.GPA_STD)[self.epoch]
            with torch.no_grad():
                params = self.gpa_params()
                if self.gpa_sum is None:
                    self.gpa_sum = {n: torch.zeros_like(p, dtype=torch.float64)
                                    for n, p in params.items()}
                for n, p in params.items():
                    self.gpa_sum[n] += w * p.double()
                if self.epoch + 1 == self.max_epoch:  # the aggregate is the final model
                    for n, p in params.items():
                        p.copy_(self.gpa_sum[n].to(p.dtype))
                    print(f"GPA: the prompts are now the Gaussian-weighted sum over "
                          f"{self.max_epoch} epochs (mean {node.GPA_MEAN}, std {node.GPA_STD})")
        super().after_epoch()  # saves the checkpoint, with the sum (training_state)

    def training_state(self):
        if self.gpa_sum is None:
            return None
        return {"gpa_sum": {n: t.clone().cpu() for n, t in self.gpa_sum.items()}}

    def load_training_state(self, state):
        saved = state.get("gpa_sum")
        if saved is not None:
            self.gpa_sum = {n: t.to(self.device) for n, t in saved.items()}


@register_method
class PromptSRCMethod(Method):
    name = "promptsrc"
    trainer = "PromptSRC"
    label = "PromptSRC"
    colour = "yellow"
    family = "VLPrompts"
    order = 67
    variants = ("b2n", "fewshot", "fewshot_fine", "xd")
    default_variant = "b2n"
    variant_labels = {"b2n": "PromptSRC", "fewshot": "PromptSRC (few-shot)",
                      "fewshot_fine": "PromptSRC (few-shot, GPA 45/5)", "xd": "PromptSRC (J=3)"}
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = {"default": ("ep20_batch4_4ctx", "ep10"),
                         "xd": ("ep20_batch4_4ctx_xd", "ep10"), "dg": ("ep20_batch4_4ctx_xd", "ep10")}
    script_args = ("VARIANT",)
    script_usage = ("VARIANT: b2n (20 epochs, GPA 15/1), fewshot (50 epochs, GPA 30/30; the "
                    "default for few-shot runs), fewshot_fine (50 epochs, GPA 45/5: upstream's "
                    "alternative for Cars, Flowers, Aircraft, DTD, EuroSAT), xd (J=3, 20 epochs, "
                    "GPA 6/10)")

    def setting(self, ctx, variant):
        refuse_resnets("PromptSRC", ctx)
        if variant == self.default_variant:
            variant = {"fewshot": "fewshot", "xd": "xd", "dg": "xd"}.get(ctx.protocol, variant)
        sched = {"b2n": "ep20_batch4_4ctx", "fewshot": "ep50_batch4_4ctx_fewshot",
                 "fewshot_fine": "ep50_batch4_4ctx_fewshot", "xd": "ep20_batch4_4ctx_xd"}[variant]
        opts = []
        if variant == "fewshot_fine":
            opts = ["TRAINER.PROMPTSRC.GPA_MEAN", "45.0", "TRAINER.PROMPTSRC.GPA_STD", "5.0"]
        return Setting(self.trainer, self.schedule(ctx, sched, "ep10"), variant, opts)
