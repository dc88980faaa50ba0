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
from toolbox.errors import UserError
from toolbox.metrics.per_task import task_metric  # noqa: F401  (also imported from here)
from toolbox.utils import atomic_write, progress

from .base import ClipTrainer
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
            state = {"classifiers": self.classifiers}
            atomic_write(osp.join(self.output_dir, CLASSIFIER_FILE),
                         lambda f: torch.save(state, f), mode="wb")
        if not self.cfg.TEST.NO_TEST:
            self.test()

    def load_model(self, directory, epoch=None):
        path = osp.join(directory or "", CLASSIFIER_FILE)
        if not osp.isfile(path):
            raise UserError(f"no linear-probe classifiers at {path}; check --model-dir (the "
                            "output folder of a LinearProbeCLIP training run)")
        self.classifiers = torch.load(path, map_location="cpu", weights_only=True)["classifiers"]

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
