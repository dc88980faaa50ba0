"""toolbox.metrics.per_task: the one place for the per-task metric and for
restricting scores to a sample's own task."""
import numpy as np
import torch

from toolbox.data.tasks import TaskInfo
from toolbox.metrics.per_task import (
    class_to_task, mask_to_own_task, own_task_scores, restrict_to_own_task, task_classes,
    task_metric, task_scores)


def _tasks():
    return [TaskInfo("a", ["x", "y"], offset=0), TaskInfo("b", ["p", "q", "r"], offset=2,
                                                             metric="mean_per_class")]


def test_restriction_over_all_classes_and_over_a_subset_agree():
    tasks = _tasks()
    torch.manual_seed(0)
    logits = torch.randn(4, 5)
    task_ids = torch.tensor([0, 1, 1, 0])
    full = mask_to_own_task(logits, task_ids, tasks)
    for i, t in enumerate(task_ids.tolist()):
        own = task_classes(tasks, t)
        assert torch.equal(full[i, own], logits[i, own])
        others = [c for c in range(5) if c not in own.tolist()]
        assert torch.isinf(full[i, others]).all()
    classes = torch.tensor([1, 3, 4])  # a subset of the columns
    sub = restrict_to_own_task(logits[:, classes], task_ids, class_to_task(tasks)[classes])
    assert torch.equal(sub, full[:, classes])
    single = [TaskInfo("only", ["x", "y", "z", "w", "v"])]
    assert torch.equal(mask_to_own_task(logits, torch.zeros(4, dtype=torch.long), single), logits)


def test_task_metric_by_hand():
    y_true = np.array([0, 0, 0, 1])
    y_pred = np.array([0, 0, 0, 0])
    assert task_metric("accuracy", y_true, y_pred) == 75.0
    assert task_metric("mean_per_class", y_true, y_pred) == 50.0
    s = task_scores("mean_per_class", y_true, y_pred)
    assert s["per_class"] == {0: 100.0, 1: 0.0}
    assert (s["correct"], s["total"]) == (3, 4)


def test_own_task_scores_equal_restricting_every_class():
    """A model that scores each sample only against its own task's classes
    (CoCoOp) gets the same matrix as scoring every class and restricting."""
    tasks = _tasks()
    torch.manual_seed(1)
    every = torch.randn(4, 5)
    task_ids = torch.tensor([1, 0, 1, 0])
    seen = []

    def score(i, classes):
        seen.append((i, classes.tolist()))
        return every[i, classes]

    got = own_task_scores(score, task_ids, tasks, 5, every)
    assert torch.equal(got, mask_to_own_task(every, task_ids, tasks))
    assert seen == [(0, [2, 3, 4]), (1, [0, 1]), (2, [2, 3, 4]), (3, [0, 1])]


def test_no_other_module_restricts_scores_or_computes_the_metric():
    """The modules that once held their own copies (issue 10, item 6) call
    toolbox/metrics/per_task.py instead."""
    import os.path as osp
    import re

    from tests.conftest import ROOT

    own_copy = re.compile(r'masked_fill|float\("-inf"\)|== "mean_per_class"|'
                          r'correct\[y_true == c\]')
    for path in ("toolbox/evaluation/evaluator.py", "trainers/linear_probe.py",
                 "toolbox/data/tasks.py", "trainers/base.py", "trainers/cocoop.py"):
        with open(osp.join(ROOT, path)) as f:
            hits = [ln.strip() for ln in f if own_copy.search(ln)]
        assert hits == [], (path, hits)
