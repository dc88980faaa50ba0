"""Per-task classification evaluation (as dassl.evaluation).

Each sample's prediction is restricted to its own task's classes. Each task
reports its metric (overall or mean per-class accuracy); ``accuracy`` is the
unweighted mean over tasks, so every trainer gets per-task results.
"""
from collections import OrderedDict

import numpy as np
import torch
from tabulate import tabulate

from ..data.tasks import TaskInfo
from ..errors import UserError
from ..metrics.per_task import mask_to_own_task, task_scores
from ..utils.registry import Registry

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def nan_accuracy_message(tasks, n_nan=None, n=None):
    """The one line for an evaluation whose model outputs (or accuracy) are NaN."""
    count = f"{n_nan} of {n} test outputs are NaN, " if n_nan is not None else ""
    return (f"the evaluation gave a NaN accuracy ({count}task(s) {', '.join(tasks) or '?'}); "
            "check for a diverged training (lower OPTIM.LR), fp16 overflow (the trainer's PREC: "
            "amp or fp32) and that every task has test images; no results.json was written")


class EvaluatorBase:
    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt, task=None):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    def __init__(self, cfg, lab2cname=None, tasks=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        if tasks is None:
            names = [lab2cname[k] for k in sorted(lab2cname)] if lab2cname else []
            tasks = [TaskInfo(name=cfg.DATASET.NAME or "task", classnames=names)]
        self.tasks = tasks
        self.per_task = []
        self.reset()

    def reset(self):
        self._y_true = []
        self._y_pred = []
        self._task = []
        self._nan = []

    def process(self, mo, gt, task=None):
        """``mo``: logits over all global classes (batch, num_classes)."""
        if task is None:
            task = torch.zeros_like(gt)
        if len(self.tasks) > 1:
            mo = mask_to_own_task(mo.float(), task.to(mo.device), self.tasks)
        # a NaN logit makes argmax pick an arbitrary class: counted, refused in evaluate()
        self._nan.extend(torch.isnan(mo.float()).any(1).cpu().tolist())
        pred = mo.max(1)[1]
        self._y_true.extend(gt.cpu().tolist())
        self._y_pred.extend(pred.cpu().tolist())
        self._task.extend(task.cpu().tolist())

    def evaluate(self):
        y_true = np.asarray(self._y_true)
        y_pred = np.asarray(self._y_pred)
        tasks_of = np.asarray(self._task)
        nan = np.asarray(self._nan, dtype=bool)
        if nan.any():
            names = [t.name for i, t in enumerate(self.tasks) if (nan & (tasks_of == i)).any()]
            raise UserError(nan_accuracy_message(names, int(nan.sum()), len(nan)))
        self.per_task = []
        for t_idx, t in enumerate(self.tasks):
            sel = tasks_of == t_idx
            if not sel.any():
                continue
            s = task_scores(t.metric, y_true[sel], y_pred[sel])
            self.per_task.append(OrderedDict(
                task=t.name, metric=t.metric, value=s["value"], accuracy=s["accuracy"],
                mean_per_class=s["mean_per_class"], total=s["total"], correct=s["correct"],
                per_class={t.classnames[c - t.offset] if 0 <= c - t.offset < t.num_classes
                           else str(c): v for c, v in sorted(s["per_class"].items())},
            ))
        overall = float(np.mean([r["value"] for r in self.per_task])) if self.per_task else 0.0
        results = OrderedDict()
        results["accuracy"] = overall
        results["error_rate"] = 100.0 - overall
        if len(self.tasks) > 1:
            for r in self.per_task:
                results[f"task/{r['task']}"] = r["value"]
        self._print(overall)
        return results

    def _print(self, overall):
        total = sum(r["total"] for r in self.per_task)
        correct = sum(r["correct"] for r in self.per_task)
        print("=> result")
        print(f"* total: {total:,}")
        print(f"* correct: {correct:,}")
        if len(self.per_task) > 1:
            print(tabulate([[r["task"], r["metric"], f"{r['value']:.2f}", r["total"]]
                            for r in self.per_task],
                           headers=["task", "metric", "value", "n"]))
            print(f"* accuracy (mean over {len(self.per_task)} tasks): {overall:.2f}%")
        else:
            metric = self.per_task[0]["metric"] if self.per_task else "accuracy"
            print(f"* accuracy ({metric}): {overall:.2f}%")
        print(f"* error: {100.0 - overall:.2f}%")
        if self.cfg.TEST.PER_CLASS_RESULT:
            for r in self.per_task:
                print(f"=> per-class result: {r['task']}")
                for cname, v in r["per_class"].items():
                    print(f"* class: {cname}\taccuracy: {v:.1f}%")


def build_evaluator(cfg, **kwargs):
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)
