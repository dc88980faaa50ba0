"""The multi-task data model: a dataset is a list of tasks.

Labels are global: task ``t`` owns ``[offset_t, offset_t + n_t)``. A single
dataset is the one-task case.
"""
from dataclasses import dataclass, field

import torch

METRICS = ("accuracy", "mean_per_class")


@dataclass
class TaskInfo:
    name: str
    classnames: list
    description: str = ""
    metric: str = "accuracy"
    offset: int = 0
    templates: list = field(default_factory=lambda: ["a photo of a {}."])

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"task {self.name}: metric must be one of {METRICS}, got {self.metric!r}")

    @property
    def num_classes(self):
        return len(self.classnames)

    @property
    def label_range(self):
        return (self.offset, self.offset + self.num_classes)


def task_ranges(tasks):
    """LongTensor (n_tasks, 2) of [start, end) label ranges."""
    return torch.tensor([t.label_range for t in tasks], dtype=torch.long)


def class_to_task(tasks):
    """LongTensor mapping each global label to its task index."""
    out = []
    for i, t in enumerate(tasks):
        out.extend([i] * t.num_classes)
    return torch.tensor(out, dtype=torch.long)


def own_task_mask(task_ids, tasks, num_classes=None, device=None):
    """Bool (batch, num_classes): True where a class belongs to the sample's task."""
    owner = class_to_task(tasks).to(device if device is not None else task_ids.device)
    if num_classes is not None and owner.numel() != num_classes:
        raise ValueError(f"tasks cover {owner.numel()} classes, logits have {num_classes}")
    return owner.unsqueeze(0) == task_ids.view(-1, 1).to(owner.device)


def mask_to_own_task(logits, task_ids, tasks):
    """Logits with every class outside the sample's own task set to -inf.

    Softmax/argmax over the result is over the task's own classes only, which
    is how both the multi-task loss and per-task evaluation are defined.
    """
    if len(tasks) <= 1:
        return logits
    mask = own_task_mask(task_ids, tasks, logits.size(1), logits.device)
    return logits.masked_fill(~mask, float("-inf"))
