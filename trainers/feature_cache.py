"""The frozen-feature cache (toolbox/features) wired to a CLIP trainer: which
backbone identity, transform and precision key its features, how missing
features are computed, and the loader of cached features that evaluation
iterates instead of decoding images.

With FEATURE_CACHE.TRAIN_VIEWS N > 0, training reads features too: N views
of every training image through the run's training transform, each drawn
with a torch RNG seeded by (SEED, the image's path under the data root, view
index), so a view is the same in every run, process, worker and batch
composition; each epoch picks one view per image with an RNG seeded by
(SEED, epoch), so a resumed run picks what the uninterrupted one picked.
"""
import functools
import hashlib
import os.path as osp
import sys

import numpy as np
import torch

from toolbox.data.data_manager import DatasetWrapper, build_data_loader
from toolbox.features import FeatureCache, backbone_identity, effective_precision, resolve_dir

from .backbones import canonical_name, weights_file_for_cfg


def accepts_features(fn):
    """Mark a ``model_inference`` that takes cached image features (batch, dim)
    as well as images; only such trainers evaluate from the cache."""
    fn.accepts_features = True
    return fn


def stored_kind(trainer):
    """What a trainer's cached rows hold, appended to the cache key: "" for the
    pooled image feature (the keys of existing caches stay as they were), else
    e.g. PLOT's flattened per-position tokens (``feature_kind`` on the trainer),
    so pooled features and tokens never mix."""
    kind = getattr(trainer, "feature_kind", "")
    return f"; stored: {kind}" if kind else ""


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
    return FeatureCache(directory, identity, text + stored_kind(trainer),
                        effective_precision(kind, trainer.prec), kind)


def encoder(trainer, items, tfm, progress=False, dataset_wrapper=None, desc="Encoding images"):
    """``encode(positions)`` for FeatureCache.features: the test-time batches
    of ``items[positions]`` through the trainer's frozen image encoder (with
    a tqdm bar over the images when ``progress``). ``dataset_wrapper``: how
    an item becomes an image (build_data_loader's; default DatasetWrapper)."""
    cfg = trainer.cfg

    def encode(positions):
        if not positions:
            return
        loader = build_data_loader(cfg, "SequentialSampler",
                                   data_source=[items[i] for i in positions],
                                   batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm,
                                   is_train=False, dataset_wrapper=dataset_wrapper)
        bar = None
        if progress:
            from tqdm import tqdm

            # on stderr, like every progress bar: log.txt (stdout) stays readable
            bar = tqdm(total=len(positions), unit="img", desc=desc, file=sys.stderr,
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


# ---- training views (FEATURE_CACHE.TRAIN_VIEWS) ------------------------------------------

VIEWS_VERSION = "train views v1"  # how views are seeded; part of their cache key


def derived_seed(*parts):
    """A 63-bit seed from ``parts`` (stable across processes and machines)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def image_key(path, root):
    """An image's path under the data root (absolute outside it): the seed of its
    views does not depend on where the data folder lives."""
    path, root = osp.abspath(path), osp.abspath(osp.expanduser(root or ""))
    return osp.relpath(path, root) if root and path.startswith(root + osp.sep) else path


class SeededViewWrapper(DatasetWrapper):
    """DatasetWrapper whose transform runs under the torch RNG seeded with
    (seed, image key, view): view ``view`` of an image is a function of the
    image alone. The caller's RNG is left as it was."""

    def __init__(self, cfg, data_source, transform=None, is_train=False, seed=0, view=0):
        super().__init__(cfg, data_source, transform=transform, is_train=False)
        self.seed, self.view, self.root = seed, view, cfg.DATASET.ROOT

    def __getitem__(self, idx):
        key = image_key(self.data_source[idx].impath, self.root)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(VIEWS_VERSION, self.seed, key, self.view))
            return super().__getitem__(idx)


def views_description(tfm, seed):
    """The exact text that keys the views of a run (None: the transform has
    no stable description, so views are computed but not cached)."""
    text = repr(tfm)
    if tfm is None or " at 0x" in text:
        return None
    return f"{VIEWS_VERSION}; seed {seed}; training transform {text}"


def train_view_features(trainer, items, n_views):
    """(n_views, len(items), dim) float32 tensor: views 0..n_views-1 of every
    item's image through the training transform and the frozen encoder, read
    from the feature cache where it has them. Leaves the global RNG alone."""
    cfg = trainer.cfg
    tfm = trainer.dm.tfm_train
    seed = cfg.SEED
    eval_cache = trainer.feature_cache
    text = views_description(tfm, seed)
    text = text + stored_kind(trainer) if text is not None else None
    cache = None
    if eval_cache is not None and text is not None:
        cache = FeatureCache(eval_cache.dir, eval_cache.identity, text, eval_cache.precision,
                             eval_cache.device_kind)
        cache.writable = eval_cache.writable  # one warning per run for an unwritable folder
    names = [trainer.tasks[it.task].name for it in items]
    views = []
    devices = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # loaders draw a seed from the global RNG
        for v in range(n_views):
            wrapper = functools.partial(SeededViewWrapper, seed=seed, view=v)
            encode = encoder(trainer, items, tfm, progress=True, dataset_wrapper=wrapper,
                             desc=f"Encoding training view {v + 1}/{n_views}")
            feats = None
            if cache is not None:
                before = dict(cache.stats)
                feats = cache.features(items, f"train-view{v}", names, encode)
                if feats is not None:
                    hits = cache.stats["hits"] - before["hits"]
                    print(f"Training view {v + 1}/{n_views}: {hits} image features from the "
                          f"cache, {len(items) - hits} encoded", flush=True)
            if feats is None:  # no (writable) cache: computed for this run only
                feats = np.concatenate([f for _, f in encode(list(range(len(items))))])
                print(f"Training view {v + 1}/{n_views}: {len(items)} images encoded "
                      "(not cached)", flush=True)
            views.append(np.asarray(feats, dtype=np.float32))
    if eval_cache is not None and cache is not None:
        eval_cache.writable = eval_cache.writable and cache.writable
    return torch.from_numpy(np.ascontiguousarray(np.stack(views)))


class _ViewDataset(torch.utils.data.Dataset):
    """Training items as one chosen view's feature each (``img``), with the
    keys DatasetWrapper gives."""

    def __init__(self, feats, items, choice):
        self.feats, self.items, self.choice = feats, items, choice

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        it = self.items[idx]
        return {"img": self.feats[self.choice[idx], idx], "label": it.label,
                "domain": it.domain, "task": it.task, "impath": it.impath, "index": idx}


def view_choice(seed, epoch, n_items, n_views):
    """The view each item is trained on in ``epoch`` (a function of seed and epoch)."""
    g = torch.Generator().manual_seed(derived_seed(VIEWS_VERSION, "epoch", seed, epoch))
    return torch.randint(n_views, (n_items,), generator=g)


def view_loader(loader, feats, epoch, seed):
    """``loader`` (the training loader) yielding, in its own batch order, each
    item's view chosen for ``epoch`` instead of its image."""
    items = loader.dataset.data_source
    choice = view_choice(seed, epoch, len(items), feats.size(0))
    return torch.utils.data.DataLoader(_ViewDataset(feats, items, choice),
                                       batch_sampler=loader.batch_sampler, num_workers=0,
                                       collate_fn=loader.collate_fn,
                                       generator=loader.generator)
