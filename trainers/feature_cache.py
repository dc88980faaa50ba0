"""The frozen-feature cache (toolbox/features) wired to a CLIP trainer: which
backbone identity, transform and precision key its features, how missing
features are computed, and the loader of cached features that evaluation
iterates instead of decoding images.
"""
import os.path as osp
import sys

import numpy as np
import torch

from toolbox.data.data_manager import build_data_loader
from toolbox.features import FeatureCache, backbone_identity, effective_precision, resolve_dir

from .backbones import canonical_name, weights_file_for_cfg


def accepts_features(fn):
    """Mark a ``model_inference`` that takes cached image features (batch, dim)
    as well as images; only such trainers evaluate from the cache."""
    fn.accepts_features = True
    return fn


def build_cache(trainer):
    """The trainer's FeatureCache, or None (disabled, or no exact transform)."""
    cfg = trainer.cfg
    if not cfg.FEATURE_CACHE.ENABLED:
        return None
    tfm = trainer.dm.tfm_test
    text = repr(tfm)
    if tfm is None or " at 0x" in text:  # no stable description of the transform
        print("Note: the evaluation transform has no exact description; no feature cache")
        return None
    directory = resolve_dir(cfg.FEATURE_CACHE.DIR, cfg.DATASET.ROOT)
    # canonical name + content hash of the weights file the config resolves to
    # (of the state dict for a model without one: random tiny/benchmark weights)
    identity = backbone_identity(canonical_name(cfg.MODEL.BACKBONE.NAME),
                                 weights_file_for_cfg(cfg), trainer.clip_model,
                                 memo_dir=directory)
    kind = trainer.device.type
    return FeatureCache(directory, identity, text, effective_precision(kind, trainer.prec), kind)


def encoder(trainer, items, tfm, progress=False):
    """``encode(positions)`` for FeatureCache.features: the test-time batches
    of ``items[positions]`` through the trainer's frozen image encoder (with
    a tqdm bar over the images when ``progress``)."""
    cfg = trainer.cfg

    def encode(positions):
        if not positions:
            return
        loader = build_data_loader(cfg, "SequentialSampler",
                                   data_source=[items[i] for i in positions],
                                   batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm,
                                   is_train=False)
        bar = None
        if progress:
            from tqdm import tqdm

            # on stderr, like every progress bar: log.txt (stdout) stays readable
            bar = tqdm(total=len(positions), unit="img", desc="Encoding images", file=sys.stderr,
                       mininterval=1.0)
        start = 0
        try:
            for batch in loader:
                feats = trainer.encode_image(batch["img"].to(trainer.device)).cpu().numpy()
                yield positions[start:start + len(feats)], feats
                start += len(feats)
                if bar is not None:
                    bar.update(len(feats))
        finally:
            if bar is not None:
                bar.close()

    return encode


class FeatureBatches:
    """Batches of cached features shaped like the image loader's batches
    (same order and batch size; ``img`` holds the features)."""

    def __init__(self, feats, items, batch_size):
        self.feats = torch.from_numpy(np.ascontiguousarray(feats))
        self.items = items
        self.batch_size = batch_size
        self.label = torch.tensor([it.label for it in items], dtype=torch.long)
        self.task = torch.tensor([it.task for it in items], dtype=torch.long)
        self.domain = torch.tensor([it.domain for it in items], dtype=torch.long)

    def __len__(self):
        return (len(self.items) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        for start in range(0, len(self.items), self.batch_size):
            end = start + self.batch_size
            yield {"img": self.feats[start:end], "label": self.label[start:end],
                   "task": self.task[start:end], "domain": self.domain[start:end],
                   "impath": [it.impath for it in self.items[start:end]],
                   "index": torch.arange(start, min(end, len(self.items)))}
