"""Per-task scoring, in one place.

A dataset is a list of tasks with global labels (task ``t`` owns
``[offset_t, offset_t + n_t)``). Two rules follow and every trainer, the
evaluator and the linear probe use them from here:

- a sample's scores are restricted to its own task's classes (the others are
  set to -inf before a softmax, a cross-entropy or an argmax);
- a task is scored with its metric: overall accuracy, or mean per-class
  accuracy over the classes present in the ground truth.

This module depends only on torch and numpy (``toolbox.data.tasks`` re-exports
its task helpers), so any layer can import it.
"""
import numpy as np
import torch

METRICS = ("accuracy", "mean_per_class")


# ---- which classes belong to which task -------------------------------------

def class_to_task(tasks):
    """LongTensor mapping each global label to its task index."""
    out = []
    for i, t in enumerate(tasks):
        out.extend([i] * t.num_classes)
    return torch.tensor(out, dtype=torch.long)


def task_classes(tasks, task_index, device=None):
    """Global labels (ascending LongTensor) of task ``task_index``."""
    start, end = tasks[int(task_index)].label_range
    return torch.arange(start, end, device=device)


# ---- restricting scores to a sample's own task ------------------------------

def restrict_to_own_task(scores, task_ids, owner):
    """``scores`` (batch, C) with every column whose task (``owner``, (C,))
    differs from the sample's task (``task_ids``, (batch,)) set to -inf.

    ``owner`` is the task of each column: ``class_to_task(tasks)`` for scores
    over all classes, or ``class_to_task(tasks)[classes]`` for scores over a
    subset ``classes``.
    """
    own = owner.to(scores.device).unsqueeze(0) == task_ids.to(scores.device).view(-1, 1)
    return scores.masked_fill(~own, float("-inf"))


def own_task_mask(task_ids, tasks, num_classes=None, device=None):
    """Bool (batch, num_classes): True where a class belongs to the sample's task."""
    owner = class_to_task(tasks).to(device if device is not None else task_ids.device)
    if num_classes is not None and owner.numel() != num_classes:
        raise ValueError(f"tasks cover {owner.numel()} classes, logits have {num_classes}")
    return owner.unsqueeze(0) == task_ids.view(-1, 1).to(owner.device)


def mask_to_own_task(logits, task_ids, tasks):
    """Logits over all global classes with every class outside the sample's
    own task set to -inf (unchanged for a single task)."""
    if len(tasks) <= 1:
        return logits
    owner = class_to_task(tasks)
    if owner.numel() != logits.size(1):
        raise ValueError(f"tasks cover {owner.numel()} classes, logits have {logits.size(1)}")
    return restrict_to_own_task(logits, task_ids, owner)


def own_task_scores(score_fn, task_ids, tasks, num_classes, like):
    """Scores (batch, num_classes) of a model that scores each sample against
    its own task's classes only (e.g. image-conditioned prompts):
    row i holds ``score_fn(i, classes)`` (a (len(classes),) tensor) at the
    global labels ``classes`` of sample i's task and -inf elsewhere, the same
    as scoring every class and calling ``restrict_to_own_task``. ``like``: a
    tensor whose dtype and device the scores take."""
    out = like.new_full((len(task_ids), num_classes), float("-inf"))
    for i in range(len(task_ids)):
        classes = task_classes(tasks, task_ids[i], like.device)
        out[i, classes] = score_fn(i, classes).to(out.dtype)
    return out


# ---- the per-task metric ----------------------------------------------------

def per_class_accuracy(y_true, y_pred):
    """{class: accuracy in percent} over the classes present in ``y_true``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    correct = y_true == y_pred
    return {int(c): 100.0 * float(correct[y_true == c].mean()) for c in np.unique(y_true)}


def task_scores(metric, y_true, y_pred):
    """Everything reported for one task: ``value`` (its metric), ``accuracy``,
    ``mean_per_class``, ``correct``, ``total`` and ``per_class``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("no samples to score")
    hit = y_true == y_pred
    acc = 100.0 * float(hit.mean())
    per_class = per_class_accuracy(y_true, y_pred)
    mpc = float(np.mean(list(per_class.values())))
    return dict(value=mpc if metric == "mean_per_class" else acc, accuracy=acc,
                mean_per_class=mpc, correct=int(hit.sum()), total=int(y_true.size),
                per_class=per_class)


def task_metric(metric, y_true, y_pred):
    """The task's metric in percent: overall or mean per-class accuracy."""
    return task_scores(metric, y_true, y_pred)["value"]
