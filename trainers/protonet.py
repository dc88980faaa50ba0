"""ProtoNet on frozen CLIP features (nearest class mean), the standard
training-free few-shot baseline: each class's prototype is the mean of the
L2-normalised features of its K shots (test-time transform, no augmentation),
normalised again; a test image goes to the class of highest cosine.

This is NOT the ProtoNet of the SoftCPT paper's table (whose numbers are far
below LP-CLIP's and cannot come from this classifier; docs/methods/protonet.md).
Features come through the frozen-feature cache, shared with LinearProbeCLIP.
"""
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.config import declare_neutral
from toolbox.engine import TRAINER_REGISTRY
from toolbox.errors import UserError
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.utils import atomic_write, progress

from .base import ClipTrainer
from .clip_model import embed_dim
from .feature_cache import accepts_features

PROTOTYPE_FILE = "prototypes.pt"


def extend_cfg(cfg):
    cfg.TRAINER.PROTONET = CN()
    cfg.TRAINER.PROTONET.PREC = "fp16"  # feature extraction: fp16 | amp | bf16 | fp32
    declare_neutral("TRAINER.PROTONET", cfg.TRAINER.PROTONET)  # a new group: runs keep their ids


def class_prototypes(feats, labels, n_classes):
    """(n_classes, d): normalised mean of the normalised ``feats`` of each class;
    a row of zeros for a class without features."""
    feats = F.normalize(torch.as_tensor(feats, dtype=torch.float32), dim=-1)
    labels = torch.as_tensor(labels, dtype=torch.long)
    sums = feats.new_zeros(n_classes, feats.shape[1]).index_add_(0, labels, feats)
    return F.normalize(sums, dim=-1)


@TRAINER_REGISTRY.register()
class ProtoNet(ClipTrainer):
    prec_key = "PROTONET"
    trains_on_images = False
    image_encoder = FROZEN_ENCODER

    def build_model(self):
        self.clip_model = self.load_clip()
        self.prototypes = None

    @torch.no_grad()
    def shot_features(self, items):
        """Frozen normalised features (test-time transform) of the training shots."""
        cached = self.cached_features(items, "train", progress=True)
        if cached is not None:
            return torch.from_numpy(np.asarray(cached, dtype=np.float32))
        from toolbox.data.data_manager import build_data_loader

        loader = build_data_loader(self.cfg, "SequentialSampler", data_source=items,
                                   batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=self.dm.tfm_test, is_train=False)
        return torch.cat([self.encode_image(b["img"].to(self.device)).cpu()
                          for b in progress(loader, "image features")])

    def fit(self):
        items = self.dm.dataset.train_x
        if not items:
            raise UserError("ProtoNet needs training images; the train split is empty")
        labels = torch.tensor([it.label for it in items])
        missing = sorted(set(range(self.num_classes)) - set(labels.tolist()))
        if missing:
            names = self.dm.dataset.classnames
            raise UserError(f"ProtoNet: class '{names[missing[0]]}' (and {len(missing) - 1} "
                            "more) has no training image; check DATASET.NUM_SHOTS")
        self.prototypes = class_prototypes(self.shot_features(items), labels,
                                           self.num_classes).to(self.device)

    def train(self):
        """Nothing is optimised: prototypes, then evaluation."""
        self.epoch = 0
        self.fit()
        if self.output_dir:
            state = {"prototypes": self.prototypes.cpu(), "trainer": "ProtoNet",
                     "tasks": [[t.name, list(t.classnames)] for t in self.tasks],
                     "backbone": self.cfg.MODEL.BACKBONE.NAME}
            atomic_write(osp.join(self.output_dir, PROTOTYPE_FILE),
                         lambda f: torch.save(state, f), mode="wb")
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def load_model(self, directory, epoch=None):
        path = osp.join(directory or "", PROTOTYPE_FILE)
        if not osp.isfile(path):
            raise UserError(f"no ProtoNet prototypes at {path}; check --model-dir (the output "
                            "folder of a ProtoNet run)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        mine = [[t.name, list(t.classnames)] for t in self.tasks]
        if state.get("tasks") != mine or state.get("backbone") != self.cfg.MODEL.BACKBONE.NAME \
                or state["prototypes"].shape != (self.num_classes, embed_dim(self.clip_model)):
            raise UserError(f"ProtoNet prototypes {path} were made for other data or another "
                            f"backbone ({state.get('backbone')}); evaluate with the dataset config "
                            "and backbone they were made with")
        self.prototypes = state["prototypes"].to(self.device)

    @accepts_features
    @torch.no_grad()
    def model_inference(self, image):
        if self.prototypes is None:
            raise UserError("ProtoNet has no prototypes: run it, or pass --model-dir with "
                            "--eval-only")
        return self.logit_scale * self.image_features(image) @ self.prototypes.t()


@register_method
class ProtoNetMethod(Method):
    name, trainer = "protonet", "ProtoNet"
    label, colour, order = "ProtoNet (NCM)", "black", 75  # training-free, like ZS-CLIP
    variants, default_variant = ("ncm",), "ncm"
    protocols = ("fewshot",)  # prototypes exist only for classes with shots
    in_comparison = True
    trains = True  # its prototypes depend on the shots and the seed's draw

    def setting(self, ctx, variant):
        return Setting("ProtoNet", ctx.backbone, variant)
