"""The multi-task data model: a dataset is a list of tasks.

Labels are global: task ``t`` owns ``[offset_t, offset_t + n_t)``. A single
dataset is the one-task case.
"""
from dataclasses import dataclass, field

import torch

# Restricting scores to a sample's own task and the per-task metric live in
# toolbox.metrics.per_task; re-exported here for the task data model's users.
from ..metrics.per_task import (  # noqa: F401
    METRICS, class_to_task, mask_to_own_task, own_task_mask, restrict_to_own_task, task_classes)


@dataclass
class TaskInfo:
    name: str
    classnames: list
    description: str = ""
    metric: str = "accuracy"
    offset: int = 0
    templates: list = field(default_factory=lambda: ["a photo of a {}."])
    # The words a learned prompt uses for the task (a task-conditioned method's task prompt);
    # "" = the name made readable ("OxfordPets" -> "oxford pets").
    prompt_name: str = ""

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
