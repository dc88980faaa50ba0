"""Linear-probe CLIP (LP-CLIP): L2-regularised logistic regression
(scikit-learn) on frozen, normalised image features, one classifier per task.

The regularisation strength C is chosen per task on the val split with the
task's own metric (overall or mean per-class accuracy): a coarse sweep over
powers of ten, then a few bisection steps in log space around the best.
Test results go through the same per-task evaluator as every other trainer.
"""
import math
import os.path as osp

import numpy as np
import torch
from yacs.config import CfgNode as CN

from toolbox.data.data_manager import build_data_loader
from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.errors import UserError
from toolbox.metrics.per_task import task_metric  # noqa: F401  (also imported from here)
from toolbox.utils import atomic_write, progress

from .backbones import canonical_name
from .base import ClipTrainer
from .clip_model import embed_dim
from .feature_cache import accepts_features

CLASSIFIER_FILE = "linear_probe.pt"


def extend_cfg(cfg):
    cfg.TRAINER.LINEAR_PROBE = CN()
    cfg.TRAINER.LINEAR_PROBE.C_MIN_EXP = -6  # coarse sweep C = 10^k, k in [C_MIN_EXP, C_MAX_EXP]
    cfg.TRAINER.LINEAR_PROBE.C_MAX_EXP = 6
    cfg.TRAINER.LINEAR_PROBE.REFINE_STEPS = 4  # bisection steps around the best coarse C
    cfg.TRAINER.LINEAR_PROBE.DEFAULT_C = 1.0  # used for a task without val images
    cfg.TRAINER.LINEAR_PROBE.C = 0.0  # > 0: use this C for every task, no search
    cfg.TRAINER.LINEAR_PROBE.MAX_ITER = 1000
    cfg.TRAINER.LINEAR_PROBE.PREC = "fp16"  # feature extraction: fp16 | amp | bf16 | fp32


def fit_logreg(x, y, c, max_iter):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=max_iter)
    return clf.fit(x, y)


def search_c(x_tr, y_tr, x_val, y_val, metric, cfg_lp):
    """Best C on val (ties go to the smaller C, the stronger regularisation)."""
    scores = {}

    def score(log_c):
        if log_c not in scores:
            clf = fit_logreg(x_tr, y_tr, 10.0 ** log_c, cfg_lp.MAX_ITER)
            scores[log_c] = task_metric(metric, y_val, clf.predict(x_val))
        return scores[log_c]

    grid = [float(k) for k in range(cfg_lp.C_MIN_EXP, cfg_lp.C_MAX_EXP + 1)]
    best = max(grid, key=lambda k: (score(k), -k))
    lo, hi = best - 1.0, best + 1.0
    for _ in range(cfg_lp.REFINE_STEPS):  # move towards the better half
        left, right = (lo + best) / 2, (best + hi) / 2
        s_left, s_right, s_best = score(left), score(right), score(best)
        if s_left > s_best and s_left >= s_right:
            hi, best = best, left
        elif s_right > s_best:
            lo, best = best, right
        else:
            lo, hi = left, right
    return 10.0 ** best, scores[best]


@TRAINER_REGISTRY.register()
class LinearProbeCLIP(ClipTrainer):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "LINEAR_PROBE"
    trains_on_images = False  # features of the test-time transform, not training views

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        lp = cfg.TRAINER.LINEAR_PROBE
        if lp.C_MIN_EXP > lp.C_MAX_EXP:
            raise UserError(f"TRAINER.LINEAR_PROBE.C_MIN_EXP ({lp.C_MIN_EXP}) must not exceed "
                            f"C_MAX_EXP ({lp.C_MAX_EXP})")
        if lp.C < 0 or lp.DEFAULT_C <= 0:
            raise UserError("TRAINER.LINEAR_PROBE.C must be >= 0 and DEFAULT_C > 0")

    def build_model(self):
        self.clip_model = self.load_clip()
        self.classifiers = None  # per task: dict(coef, intercept, classes, C, val_score)

    @torch.no_grad()
    def features(self, items, split):
        """Frozen features (test-time transform) and labels of ``items`` (of
        ``split``), from the feature cache where there is one."""
        cached = self.cached_features(items, split, progress=True)
        if cached is not None:
            return cached.astype(np.float64), np.array([it.label for it in items], dtype=np.int64)
        loader = build_data_loader(self.cfg, "SequentialSampler", data_source=items,
                                   batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=self.dm.tfm_test, is_train=False)
        feats, labels = [], []
        for batch in progress(loader, "image features"):
            feats.append(self.encode_image(batch["img"].to(self.device)).cpu())
            labels.append(batch["label"])
        return torch.cat(feats).numpy().astype(np.float64), torch.cat(labels).numpy()

    def fit(self):
        ds = self.dm.dataset
        if not ds.train_x:
            raise UserError("LinearProbeCLIP needs training images; the train split is empty")
        x_tr, y_tr = self.features(ds.train_x, "train")
        x_val, y_val = self.features(ds.val, "val") if ds.val else (None, None)
        lp = self.cfg.TRAINER.LINEAR_PROBE
        self.classifiers = []
        for t in self.tasks:
            start, end = t.label_range
            tr = (y_tr >= start) & (y_tr < end)
            if len(np.unique(y_tr[tr])) < 2:
                raise UserError(f"task {t.name} has fewer than 2 classes with training images; "
                                "a linear probe needs at least 2 (check DATASET.NUM_SHOTS)")
            val = None if y_val is None else (y_val >= start) & (y_val < end)
            if lp.C > 0:
                c, val_score = lp.C, None
            elif val is None or not val.any():
                print(f"Note: task {t.name} has no val images; using "
                      f"TRAINER.LINEAR_PROBE.DEFAULT_C = {lp.DEFAULT_C}")
                c, val_score = lp.DEFAULT_C, None
            else:
                c, val_score = search_c(x_tr[tr], y_tr[tr], x_val[val], y_val[val], t.metric, lp)
            clf = fit_logreg(x_tr[tr], y_tr[tr], c, lp.MAX_ITER)
            print(f"Task {t.name}: C = {c:.4g}" + (f" (val {t.metric} {val_score:.2f})"
                                                   if val_score is not None else ""))
            self.classifiers.append(dict(
                coef=torch.from_numpy(clf.coef_).float(),
                intercept=torch.from_numpy(clf.intercept_).float(),
                classes=torch.from_numpy(clf.classes_.astype(np.int64)), C=float(c),
                val_score=val_score))

    def train(self):
        self.epoch = 0
        self.fit()
        if self.output_dir:
            # what they were fit on, checked by --eval-only (load_model)
            state = {"classifiers": self.classifiers, "trainer": "LinearProbeCLIP",
                     "tasks": self.task_signature(), "backbone": canonical_name(self.cfg),
                     "feature_dim": int(self.classifiers[0]["coef"].shape[1])}
            atomic_write(osp.join(self.output_dir, CLASSIFIER_FILE),
                         lambda f: torch.save(state, f), mode="wb")
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def load_model(self, directory, epoch=None):
        path = osp.join(directory or "", CLASSIFIER_FILE)
        if not osp.isfile(path):
            raise UserError(f"no linear-probe classifiers at {path}; check --model-dir (the "
                            "output folder of a LinearProbeCLIP training run)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            classifiers = state["classifiers"]
        except Exception as e:
            raise UserError(f"cannot read linear-probe classifiers {path} ({type(e).__name__}); "
                            "train the linear probe again into a new --output-dir") from None
        self.check_classifiers(path, state, classifiers)
        self.classifiers = classifiers

    def task_signature(self):
        """[[task name, [class names]], ...] of this run's dataset."""
        return [[t.name, list(t.classnames)] for t in self.tasks]

    def check_classifiers(self, path, state, classifiers):
        """A UserError naming both sides when saved classifiers do not fit this
        run: other tasks or classes (another dataset config, DATASET.TASKS or
        SUBSAMPLE_CLASSES) or other feature sizes (another backbone)."""
        def describe(sig):
            shown = ", ".join(f"{name} ({len(names)} classes)" for name, names in sig[:4])
            return shown + (f" and {len(sig) - 4} more" if len(sig) > 4 else "")

        fix = ("evaluate with the dataset config, DATASET.TASKS, DATASET.SUBSAMPLE_CLASSES and "
               "backbone it was trained with, or train the linear probe for this one")
        mine, saved = self.task_signature(), state.get("tasks")
        if saved is not None and saved != mine:
            if [n for n, _ in saved] == [n for n, _ in mine]:
                name, a, b = next((n, a, b) for (n, a), (_, b) in zip(saved, mine) if a != b)
                detail = (f"other classes of task {name}: {', '.join(a[:3])}... there, "
                          f"{', '.join(b[:3])}... here")
            else:
                detail = f"tasks {describe(saved)} there, {describe(mine)} here"
            raise UserError(f"linear-probe classifiers {path} were fit on other data ({detail}); "
                            + fix)
        if saved is None:  # written before the tasks were recorded: check the label ranges
            ranges = [t.label_range for t in self.tasks]
            fits = len(classifiers) == len(ranges) and all(
                c["classes"].numel() and lo <= int(c["classes"].min())
                and int(c["classes"].max()) < hi for c, (lo, hi) in zip(classifiers, ranges))
            if not fits:
                raise UserError(f"linear-probe classifiers {path} ({len(classifiers)} tasks) do "
                                f"not fit this run's {len(ranges)} tasks ({describe(mine)}); "
                                + fix)
        backbone = canonical_name(self.cfg)
        if canonical_name(state.get("backbone") or backbone) != backbone:
            raise UserError(f"linear-probe classifiers {path} were fit on features of backbone "
                            f"{state['backbone']}, this run's is {backbone}; " + fix)
        dim = embed_dim(self.clip_model)
        theirs = int(classifiers[0]["coef"].shape[1]) if classifiers else dim
        if theirs != dim:
            raise UserError(f"linear-probe classifiers {path} were fit on {theirs}-dim image "
                            f"features, backbone {self.cfg.MODEL.BACKBONE.NAME} gives {dim}; "
                            + fix)

    def results_extra(self):
        return {"C": {t.name: c["C"] for t, c in zip(self.tasks, self.classifiers)}}

    @accepts_features
    @torch.no_grad()
    def model_inference(self, image):
        """Per-task log-probabilities in each task's label range (-inf for
        classes a task's classifier never saw)."""
        if self.classifiers is None:
            raise UserError("LinearProbeCLIP has no classifiers: train it, or pass --model-dir "
                            "with --eval-only")
        feats = self.image_features(image)
        out = feats.new_full((feats.size(0), self.num_classes), -math.inf)
        for c in self.classifiers:
            w, b = c["coef"].to(feats), c["intercept"].to(feats)
            if w.size(0) == 1:  # binary: sklearn keeps one row for the positive class
                z = feats @ w[0] + b[0]
                scores = torch.stack([torch.zeros_like(z), z], dim=1)  # softmax = sigmoid(z)
            else:
                scores = feats @ w.t() + b
            out[:, c["classes"].to(self.device)] = torch.log_softmax(scores, dim=1)
        return out


@register_method
class LinearProbeMethod(Method):
    name, trainer, label, colour, order = "linear_probe", "LinearProbeCLIP", "LP-CLIP", \
        "bluish green", 70
    quick = True  # in the benches' default demo grids
    variants, default_variant = ("logreg",), "logreg"

    def setting(self, ctx, variant):
        return Setting(self.trainer, ctx.backbone, variant)
