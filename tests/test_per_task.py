"""toolbox.metrics.per_task: the one place for the per-task metric and for
restricting scores to a sample's own task."""
import numpy as np
import torch

from toolbox.data.tasks import TaskInfo
from toolbox.metrics.per_task import (
    class_to_task, mask_to_own_task, restrict_to_own_task, task_classes, task_metric, task_scores)


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
