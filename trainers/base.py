"""ClipTrainer: what every CLIP method here shares on top of TrainerX.

- the frozen CLIP from MODEL.BACKBONE, with a check of INPUT.SIZE;
- precision: fp32 on CPU; on CUDA autocast (PREC fp16/amp with a GradScaler
  and fp32 master weights, or bf16);
- one optimizer step per batch over all trainable parameters, the scheduler
  stepped once per epoch (Dassl's convention);
- the multi-task loss (per sample, cross-entropy over its own task's classes)
  computed over only the classes of the tasks present in the batch;
- evaluation that encodes every class prompt once per pass, and reads image
  features from the frozen-feature cache (trainers/feature_cache.py) instead
  of decoding and encoding every image again; evaluation leaves the global
  RNG as it found it, so training draws the same numbers whether the cache
  was cold, warm or off;
- with FEATURE_CACHE.TRAIN_VIEWS N, training on N cached augmented views per
  image (``forward_train`` marked ``accepts_features`` reads its images
  through ``image_features``).
"""
import torch
import torch.nn.functional as F

from toolbox.metrics.per_task import class_to_task, restrict_to_own_task
from toolbox.engine import TrainerX
from toolbox.engine import distributed as ddp
from toolbox.errors import UserError, check_choice
from toolbox.methods import image_encoder_of
from toolbox.metrics import compute_accuracy
from toolbox.optim import build_lr_scheduler, build_optimizer

from .clip_model import autocast_context, load_clip_from_cfg
from .feature_cache import (FeatureBatches, accepts_features, build_cache, encoder,
                            train_view_features, view_loader)

PRECISIONS = ("fp16", "amp", "bf16", "fp32")


class ClipTrainer(TrainerX):
    prec_key = None  # e.g. "COOP": reads cfg.TRAINER.COOP.PREC
    trains_on_images = True  # False: nothing is trained on images (zero-shot, linear probe)

    @classmethod
    def image_encoder_contract(cls):
        """The class's declared ImageEncoder (toolbox/methods.py); none: not frozen."""
        return image_encoder_of(cls)

    @classmethod
    def trains_on_features(cls):
        """True when training reads images only through ``forward_train``
        marked ``accepts_features`` (so FEATURE_CACHE.TRAIN_VIEWS can feed it),
        and the class declares its image encoder frozen in training."""
        return (cls.image_encoder_contract().frozen_in_training
                and getattr(cls.forward_train, "accepts_features", False)
                and cls.forward_backward is ClipTrainer.forward_backward
                and cls.run_epoch is ClipTrainer.run_epoch)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_choice(f"TRAINER.{self.prec_key}.PREC", self.prec, PRECISIONS)
        views = cfg.FEATURE_CACHE.TRAIN_VIEWS
        if views > 0 and not self.trains_on_images:
            print(f"Note: FEATURE_CACHE.TRAIN_VIEWS has no effect on {type(self).__name__} "
                  "(it trains nothing on images)")
        elif views > 0 and not self.trains_on_features():
            why = ("its image encoder is not declared frozen in training"
                   if not self.image_encoder_contract().frozen_in_training else
                   "no forward_train marked accepts_features")
            raise UserError(f"FEATURE_CACHE.TRAIN_VIEWS {views}: {type(self).__name__} trains on "
                            f"images itself ({why}); set FEATURE_CACHE.TRAIN_VIEWS 0")
        elif views > 0 and cfg.SEED < 0:
            raise UserError(f"FEATURE_CACHE.TRAIN_VIEWS {views} needs a fixed seed (--seed 0 or "
                            "more): the views are drawn with it")

    def __init__(self, cfg):
        self._eval_text = None
        self._on_features = False  # evaluation batches hold cached features, not images
        self._feature_cache = False  # built on first use; None: no cache
        self._train_views = None  # (views, items, dim) features, FEATURE_CACHE.TRAIN_VIEWS
        self.cfg = cfg
        super().__init__(cfg)
        if cfg.MODEL.INIT_FROM:  # source-to-target initialisation (a resume overrides it)
            from .transfer_init import init_from_runs

            init_from_runs(self, cfg.MODEL.INIT_FROM)
        self.check_image_encoder_contract()

    def check_image_encoder_contract(self):
        """A trainer declared frozen in training must not train its image encoder: the
        feature cache would then serve stale features (toolbox/methods.py)."""
        visual = getattr(getattr(self, "clip_model", None), "visual", None)
        if visual is None or not self.image_encoder_contract().frozen_in_training:
            return
        mine = {id(p) for p in visual.parameters()}
        for name in self.get_model_names():
            optim = self._optims.get(name)
            params = [p for g in (optim.param_groups if optim else []) for p in g["params"]]
            if any(id(p) in mine and p.requires_grad for p in params):
                raise UserError(f"{type(self).__name__} declares its image encoder frozen in "
                                f"training but its model '{name}' trains image-encoder "
                                "weights; declare image_encoder = ImageEncoder(False, False) "
                                "(toolbox/methods.py), so the feature cache is not used")

    @property
    def prec(self):
        if self.prec_key is None:
            return "fp32"
        return self.cfg.TRAINER[self.prec_key].PREC

    # ---- model ----------------------------------------------------------------

    def load_clip(self):
        print(f"Loading CLIP (backbone: {self.cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_from_cfg(self.cfg, self.device)
        self.logit_scale = clip_model.logit_scale.exp().item()
        self.owner = class_to_task(self.tasks).to(self.device)
        self.scaler = None
        if self.device.type == "cuda" and self.prec in ("fp16", "amp"):
            self.scaler = torch.amp.GradScaler("cuda")
        return clip_model

    def register_trainable(self, name, module):
        """Register ``module`` with an optimizer and scheduler from cfg.OPTIM;
        its checkpoints go to ``<output>/<name>/``."""
        optim = build_optimizer(module, self.cfg.OPTIM)
        self.register_model(name, module, optim, build_lr_scheduler(optim, self.cfg.OPTIM))

    def autocast(self):
        return autocast_context(self.device, self.prec)

    @torch.no_grad()
    def encode_image(self, image):
        """Normalised features from the frozen image encoder."""
        with self.autocast():
            feats = self.clip_model.encode_image(image)
        return F.normalize(feats.float(), dim=-1)

    # ---- training -------------------------------------------------------------

    def batch_classes(self, task):
        """Global indices of the classes of the tasks present in ``task``
        (all classes for a single-task dataset), in ascending order."""
        if len(self.tasks) == 1:
            return torch.arange(self.num_classes, device=self.device)
        present = torch.zeros(len(self.tasks), dtype=torch.bool, device=self.device)
        present[task.to(self.device)] = True
        return torch.nonzero(present[self.owner], as_tuple=False).view(-1)

    def task_loss(self, logits, label, task, classes):
        """Cross-entropy of each sample over its own task's classes.

        ``logits`` (batch, len(classes)) are over ``classes`` (from
        ``batch_classes``); equal to the loss over all classes with the other
        tasks masked out.
        """
        if len(self.tasks) > 1:
            logits = restrict_to_own_task(logits, task, self.owner[classes])
        position = torch.full((self.num_classes,), -1, dtype=torch.long, device=self.device)
        position[classes] = torch.arange(classes.numel(), device=self.device)
        target = position[label]
        return F.cross_entropy(logits.float(), target), logits, target

    def parse_batch_train(self, batch):
        image = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        task = batch["task"].to(self.device)
        return image, label, task

    def forward_backward(self, batch):
        image, label, task = self.parse_batch_train(batch)
        with self.autocast():
            loss, logits, target, extra = self.forward_train(image, label, task)
        self.optimize(loss)
        summary = {"loss": loss.item()}
        if logits is not None:
            summary["acc"] = compute_accuracy(logits.float(), target)[0].item()
        summary.update({k: (v.item() if torch.is_tensor(v) else v) for k, v in extra.items()})
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def forward_train(self, image, label, task):
        """Return (loss, logits over the batch's classes, targets, extra dict).
        Mark it ``accepts_features`` when it reads ``image`` only through
        ``image_features`` (then FEATURE_CACHE.TRAIN_VIEWS can feed it)."""
        raise TypeError(f"{type(self).__name__} must implement forward_train()")

    def run_epoch(self):
        """TrainerX's epoch; with FEATURE_CACHE.TRAIN_VIEWS, over each training
        item's view for this epoch (cached features) instead of its image."""
        n_views = self.cfg.FEATURE_CACHE.TRAIN_VIEWS
        loader = self.train_loader_x
        if n_views <= 0 or loader is None:
            return super().run_epoch()
        if self._train_views is None:
            items = loader.dataset.data_source
            print(f"Training on {n_views} cached view(s) of each of the {len(items):,} training "
                  "images (FEATURE_CACHE.TRAIN_VIEWS)", flush=True)
            self._train_views = train_view_features(self, items, n_views)
        self.train_loader_x = view_loader(loader, self._train_views, self.epoch, self.cfg.SEED)
        self._on_features = True
        try:
            return super().run_epoch()
        finally:
            self.train_loader_x = loader
            self._on_features = False

    def optimize(self, loss):
        """One optimizer step over every registered model."""
        self.detect_anomaly(loss)
        self.model_zero_grad()
        loss = self.ddp_weighted(loss)  # DDP: this rank's share of the global batch
        if self.scaler is None:
            loss.backward()
            self.model_update()
        else:
            self.scaler.scale(loss).backward()
            self.sync_gradients()  # DDP: same scale on every rank
            for name in self.get_model_names():
                if self._optims[name] is not None:
                    self.scaler.step(self._optims[name])
            self.scaler.update()

    # ---- text side over DDP ranks -----------------------------------------------

    # DDP: each rank encodes a contiguous share of the class prompts (False: every rank
    # encodes all the classes its own batch needs, as a single process does).
    split_text = True

    def split_over_ranks(self, encode, classes, same_on_all_ranks=False, chunk=None):
        """``encode(classes)``: the (len(classes), d) text features of the global class
        indices ``classes``. In one process, that call. Under DDP the classes of all
        ranks (their union; ``same_on_all_ranks``: already the same everywhere, as in
        evaluation) are split into contiguous shares, each rank encodes its share (in
        chunks of ``chunk`` classes when given), and the features are gathered on every
        rank with their gradients (toolbox/engine/distributed.py): the text encoder's
        cost per step is divided by the number of ranks, the result is the same."""
        if not (self.split_text and ddp.is_distributed()):
            return encode(classes)
        needed = classes if same_on_all_ranks else ddp.union_of_indices(classes,
                                                                        self.num_classes)
        world = ddp.get_world_size()
        if needed.numel() < world:  # too few to give every rank a share
            return encode(classes)
        start, stop = ddp.share_bounds(needed.numel())
        mine = needed[start:stop]
        if chunk:
            feats = torch.cat([encode(mine[i:i + chunk]) for i in range(0, mine.numel(), chunk)])
        else:
            feats = encode(mine)
        sizes = [b - a for a, b in (ddp.share_bounds(needed.numel(), r, world)
                                    for r in range(world))]
        if not getattr(self, "_split_noted", False):
            self._split_noted = True
            print(f"DDP: the class prompts are split over {world} ranks (first split: "
                  f"{needed.numel()} classes as {'+'.join(map(str, sizes))})", flush=True)
        every = ddp.all_gather_rows(feats, sizes)
        if same_on_all_ranks:
            return every
        return every[torch.searchsorted(needed, classes)]

    # ---- evaluation -----------------------------------------------------------

    def class_text_features(self):
        """Normalised text features of every class (n_classes, d), eval only."""
        raise TypeError(f"{type(self).__name__} must implement class_text_features()")

    @property
    def feature_cache(self):
        """The FeatureCache, or None: disabled, or the class does not declare its
        image encoder frozen in any phase (toolbox/methods.py ImageEncoder)."""
        if self._feature_cache is False:
            contract = self.image_encoder_contract()
            frozen = contract.frozen_in_training or contract.frozen_in_evaluation
            self._feature_cache = build_cache(self) if frozen else None
        return self._feature_cache

    def cached_features(self, items, split, tfm=None, progress=False):
        """Frozen features (len(items), dim) float32 array of ``items`` (test-time
        transform) through the feature cache; None when there is no cache, or when
        the image encoder is not declared frozen in the phase that reads ``split``
        (the train split: training; val and test: evaluation).
        ``progress``: a progress bar over the images that must be encoded."""
        phase = "train" if split == "train" else "eval"
        cache = self.feature_cache
        if cache is None or not items or not self.image_encoder_contract().frozen(phase):
            return None
        tfm = self.dm.tfm_test if tfm is None else tfm
        names = [self.tasks[it.task].name for it in items]
        before = dict(cache.stats)
        feats = cache.features(items, split, names, encoder(self, items, tfm, progress))
        if feats is not None:
            hits = cache.stats["hits"] - before["hits"]
            print(f"Image features ({split}): {hits} from the cache, "
                  f"{len(items) - hits} encoded (cache: {cache.dir})", flush=True)
        return feats

    def image_features(self, image):
        """Normalised image features of a batch: the batch itself when it holds
        cached features (evaluation from the cache, FEATURE_CACHE.TRAIN_VIEWS
        training), else the frozen encoder's output."""
        if self._on_features:
            return image.float()
        return self.encode_image(image)

    def _feature_loader(self, loader, split):
        """Cached-feature batches standing in for ``loader``, or None."""
        if not getattr(type(self).model_inference, "accepts_features", False):
            return None  # an override that expects images (e.g. a ported trainer)
        if not self.image_encoder_contract().frozen_in_evaluation:
            return None  # the encoder it evaluates is not the frozen one the cache holds
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, torch.utils.data.SequentialSampler) or loader.batch_size is None:
            return None
        items = loader.dataset.data_source
        # a cold store encodes the whole split here: minutes on a real backbone, so a bar
        feats = self.cached_features(items, split, loader.dataset.transform, progress=True)
        if feats is None:
            return None
        return FeatureBatches(feats, items, loader.batch_size)

    def test(self, split=None):
        # The image loader draws a seed from the global RNG, cached batches do
        # not: evaluating in a forked RNG keeps training's random numbers the
        # same with the cache cold, warm or off.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return self._test(split)

    def _test(self, split=None):
        self._eval_text = None
        split = split or self.cfg.TEST.SPLIT
        attr = "val_loader" if split == "val" and self.val_loader is not None else "test_loader"
        loader = getattr(self, attr)
        batches = self._feature_loader(loader, "val" if attr == "val_loader" else "test") \
            if loader is not None else None
        try:
            if batches is not None:
                setattr(self, attr, batches)
                self._on_features = True
            return super().test(split)
        finally:
            setattr(self, attr, loader)
            self._on_features = False
            self._eval_text = None

    @accepts_features
    @torch.no_grad()
    def model_inference(self, image):
        if self._eval_text is None:
            with self.autocast():
                self._eval_text = F.normalize(self.class_text_features().float(), dim=-1)
        return self.logit_scale * self.image_features(image) @ self._eval_text.t()
