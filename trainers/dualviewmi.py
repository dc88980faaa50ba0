"""DualViewMI: a soft view (CoOp context + class name) and a frozen
hand-crafted view of every class, tied by maximising their mutual
information (class-level InfoNCE), plus class-wise visual augmentation.

This is our reading of the paper's abstract (arXiv 2410.03189): its code and
equations are not public, so every choice below is a config key.

Loss = CE(soft logits, own task) + MI_WEIGHT * L_MI + AUG_WEIGHT * L_aug, with
L_MI over the classes the batch needs and L_aug the same CE on augmented
(same-class mixed) image features of the samples that found a same-class
partner. Partners come from a per-class memory of the frozen training
features (AUG_PARTNERS memory, filled before training) or from the batch.
The fraction of samples with a partner is logged per epoch and stored in
results.json. Inference uses the soft prompts, or the fused classifier
normalise(a * t_soft + (1 - a) * t_hand).
"""
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.data.data_manager import build_data_loader
from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.errors import UserError, check_choice

from .class_augment import AUG_MODES, PARTNER_SOURCES, ClassAugment
from .feature_cache import accepts_features
from .mi_estimators import MI_DIRECTIONS, MI_ESTIMATORS, MIEstimator
from .two_view import TwoViewCoOp, add_soft_prompt_keys

INFERENCE_MODES = ("soft", "fused")
MEMORY_TRANSFORMS = ("test", "train")
UNPARTNERED = ("skip", "keep")
# MI_DIRECTION in the estimator's terms (a = soft view, b = hand-crafted view)
MI_DIRECTION_KEYS = {"both": "both", "soft_to_hand": "a_to_b", "hand_to_soft": "b_to_a"}
assert set(MI_DIRECTION_KEYS.values()) == set(MI_DIRECTIONS)


def extend_cfg(cfg):
    cfg.TRAINER.DUALVIEWMI = c = CN()
    add_soft_prompt_keys(c)
    c.MI_ESTIMATOR = "infonce"  # infonce (cosine) | critic (learnable MLP head per view)
    c.MI_CRITIC_HIDDEN = 0  # critic: hidden width of each head (0: feature dim // 4, >= 8)
    c.MI_TEMPERATURE = 0.07  # InfoNCE temperature tau
    # both (symmetric: the mean of soft->hand and hand->soft) | soft_to_hand (each
    # soft prompt picks its class's hand-crafted feature) | hand_to_soft
    c.MI_DIRECTION = "both"
    c.MI_WEIGHT = 1.0  # lambda_mi
    c.AUG = "mixup"  # none | mixup (mix with a same-class feature) | prototype (with a class mean)
    # where same-class partners come from: memory (the frozen features of every
    # training image, encoded once before training) | batch (the batch itself;
    # prototype: running means of the features seen so far)
    c.AUG_PARTNERS = "memory"
    # the transform of the images the memory encodes: test (deterministic resize
    # + crop) | train (the training augmentation, drawn once)
    c.AUG_MEMORY_TRANSFORM = "test"
    # samples without a same-class partner in L_aug: skip (left out: their
    # feature is unchanged, so they would only re-weight the CE) | keep
    c.AUG_UNPARTNERED = "skip"
    c.AUG_WEIGHT = 0.5  # lambda_aug
    c.AUG_ALPHA = 1.0  # mixing coefficient ~ Beta(AUG_ALPHA, AUG_ALPHA)
    c.INFERENCE = "soft"  # soft | fused
    c.FUSE_WEIGHT = 0.5  # a in normalise(a * t_soft + (1 - a) * t_hand)


def fuse(soft, hand, weight):
    return F.normalize(weight * soft + (1.0 - weight) * hand, dim=-1)


@TRAINER_REGISTRY.register()
class DualViewMI(TwoViewCoOp):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "DUALVIEWMI"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        c = cfg.TRAINER.DUALVIEWMI
        directions = tuple(MI_DIRECTION_KEYS)
        for key, allowed in (("MI_ESTIMATOR", MI_ESTIMATORS), ("MI_DIRECTION", directions),
                             ("AUG", AUG_MODES), ("AUG_PARTNERS", PARTNER_SOURCES),
                             ("AUG_MEMORY_TRANSFORM", MEMORY_TRANSFORMS),
                             ("AUG_UNPARTNERED", UNPARTNERED), ("INFERENCE", INFERENCE_MODES)):
            check_choice(f"TRAINER.DUALVIEWMI.{key}", c[key], allowed)
        if c.MI_CRITIC_HIDDEN < 0:
            raise UserError(f"TRAINER.DUALVIEWMI.MI_CRITIC_HIDDEN must be >= 0 (0: automatic), "
                            f"got {c.MI_CRITIC_HIDDEN}")
        for key in ("MI_TEMPERATURE", "AUG_ALPHA"):
            if not c[key] > 0:
                raise UserError(f"TRAINER.DUALVIEWMI.{key} must be > 0, got {c[key]}")
        for key in ("MI_WEIGHT", "AUG_WEIGHT"):
            if c[key] < 0:
                raise UserError(f"TRAINER.DUALVIEWMI.{key} must be >= 0, got {c[key]}")
        if not 0.0 <= c.FUSE_WEIGHT <= 1.0:
            raise UserError(f"TRAINER.DUALVIEWMI.FUSE_WEIGHT must be in [0, 1], "
                            f"got {c.FUSE_WEIGHT}")

    def build_model(self):
        super().build_model()
        c, dim = self.node, self.hand_text.shape[1]
        self.mi = MIEstimator(c.MI_ESTIMATOR, dim, c.MI_TEMPERATURE,
                              MI_DIRECTION_KEYS[c.MI_DIRECTION],
                              c.MI_CRITIC_HIDDEN or None).to(self.device)
        if self.mi.learnable:
            self.register_trainable("mi_critic", self.mi)
        self.class_aug = ClassAugment(c.AUG, self.num_classes, dim, c.AUG_ALPHA,
                                      c.AUG_PARTNERS).to(self.device)
        self.aug_history = []  # per epoch: samples with a same-class partner
        self._aug_count = [0, 0]  # this epoch: (partnered, samples)
        self._batch_index = None

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self.class_aug.train(mode == "train")  # augmentation only while training

    def training_state(self):
        # outside the saved weights, kept for an exact --resume: the per-epoch
        # partner counts, and the batch prototypes (running means). The memory
        # is rebuilt from the frozen encoder instead (deterministic).
        if self.class_aug.mode == "none":
            return None
        state = {"aug_partnered": [dict(h) for h in self.aug_history]}
        if self.class_aug.mode == "prototype" and self.class_aug.partners == "batch":
            state.update(class_prototypes=self.class_aug.prototypes.cpu(),
                         class_counts=self.class_aug.counts.cpu())
        return state

    def load_training_state(self, state):
        self.aug_history = [dict(h) for h in state.get("aug_partnered", [])]
        if "class_prototypes" in state and self.class_aug.partners == "batch":
            self.class_aug.prototypes.copy_(state["class_prototypes"])
            self.class_aug.counts.copy_(state["class_counts"])

    @torch.no_grad()
    def fill_aug_memory(self):
        """Frozen features (AUG_MEMORY_TRANSFORM: the test-time transform, or
        the training augmentation drawn once) of every training item, row i =
        item i of the training loader's data source. Runs in a forked RNG, so
        a fresh and a resumed run draw the same random numbers after it."""
        items = self.train_loader_x.dataset.data_source
        which = self.node.AUG_MEMORY_TRANSFORM
        print(f"Encoding the class-wise augmentation memory ({len(items):,} training images, "
              f"{which} transform)")
        tfm = self.dm.tfm_train if which == "train" else self.dm.tfm_test
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            # test transform: the same features as the feature cache's "train" split
            # (LinearProbeCLIP's too); a drawn training augmentation is never cached
            cached = self.cached_features(items, "train", tfm, progress=True) \
                if which == "test" else None
            if cached is not None:
                feats = torch.from_numpy(cached)
            else:
                loader = build_data_loader(self.cfg, "SequentialSampler", data_source=items,
                                           batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                           tfm=tfm, is_train=False)
                feats = torch.cat([self.encode_image(b["img"].to(self.device)) for b in loader])
        labels = torch.tensor([d.label for d in items], dtype=torch.long)
        self.class_aug.fill_memory(feats, labels)

    def parse_batch_train(self, batch):
        # the items' training-set indices: the memory leaves a sample's own row out
        self._batch_index = batch.get("index")
        return super().parse_batch_train(batch)

    def before_epoch(self):
        super().before_epoch()
        self._aug_count = [0, 0]

    def after_epoch(self):
        partnered, samples = self._aug_count
        if self.class_aug.mode != "none" and samples:
            frac = partnered / samples
            print(f"epoch {self.epoch + 1}: class-wise augmentation ({self.node.AUG}, partners "
                  f"from the {self.node.AUG_PARTNERS}) found a same-class partner for "
                  f"{partnered}/{samples} samples ({100 * frac:.1f}%)")
            self.write_scalar("train/aug_partnered", frac, self.epoch)
            self.aug_history.append(dict(epoch=self.epoch + 1, partnered=partnered,
                                         samples=samples, fraction=frac))
        super().after_epoch()  # saves checkpoints: the history above goes with them

    def results_extra(self):
        if self.class_aug.mode == "none":
            return {}
        partnered = sum(h["partnered"] for h in self.aug_history)
        samples = sum(h["samples"] for h in self.aug_history)
        return {"aug_partnered": dict(
            source=self.node.AUG_PARTNERS, mode=self.node.AUG,
            fraction=partnered / samples if samples else None,
            per_epoch=[dict(h) for h in self.aug_history])}

    @accepts_features
    def forward_train(self, image, label, task):
        c = self.node
        classes = self.batch_classes(task)
        soft = self.text_features(classes)
        feats = self.image_features(image)
        ce, logits, target = self.task_loss(self.logit_scale * feats @ soft.t(), label, task,
                                            classes)
        mi = self.mi(soft, self.hand_text[classes])
        loss = ce + c.MI_WEIGHT * mi
        extra = {"ce": ce, "mi": mi}
        index, self._batch_index = self._batch_index, None
        if self.class_aug.active:
            if self.class_aug.needs_memory:
                self.fill_aug_memory()
            aug, partnered = self.class_aug(feats, label, index)
            self._aug_count[0] += int(partnered.sum())
            self._aug_count[1] += label.numel()
            # samples without a partner (feature unchanged) would only re-weight the CE
            used = partnered if c.AUG_UNPARTNERED == "skip" else torch.ones_like(partnered)
            if used.any():
                aug_loss = self.task_loss(self.logit_scale * aug[used] @ soft.t(),
                                          label[used], task[used], classes)[0]
            else:
                aug_loss = ce.new_zeros(())
            loss = loss + c.AUG_WEIGHT * aug_loss
            extra["aug"] = aug_loss
        return loss, logits, target, extra

    def class_text_features(self):
        soft = self.text_features()
        if self.node.INFERENCE == "fused":
            return fuse(soft, self.hand_text, self.node.FUSE_WEIGHT)
        return soft


@register_method
class DualViewMIMethod(Method):
    name, trainer, label, colour, order = "dualviewmi", "DualViewMI", "DualViewMI", \
        "reddish purple", 20
    variants, default_variant = ("soft", "fused"), "soft"
    protocols = ("fewshot", "base2new", "xd", "dg")
    protocol_schedule = ("ep10_batch4", "ep10")

    def setting(self, ctx, variant):
        return Setting(self.trainer, self.schedule(ctx, "ep10_batch4"), variant,
                       ["TRAINER.DUALVIEWMI.INFERENCE", variant])
