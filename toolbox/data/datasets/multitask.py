"""Multi-task suites: compositions of registered task datasets.

Each member keeps its own split, few-shot draw and metric; labels are shifted
so task ``t`` owns ``[offset_t, offset_t + n_t)`` and each Datum carries ``task``.
"""
from dataclasses import replace

from ...errors import UserError
from .base_dataset import DatasetBase, Datum
from .build import DATASET_REGISTRY


def select_tasks(members, wanted):
    """Members picked by DATASET.TASKS (names or 0-based indices; empty = all)."""
    if not wanted:
        return list(members)
    out = []
    for w in wanted:
        w = str(w)
        if w.isdigit():
            i = int(w)
            if i >= len(members):
                raise UserError(f"DATASET.TASKS index {i} out of range: this suite has "
                                f"{len(members)} tasks (0..{len(members) - 1})")
            name = members[i]
        elif w in members:
            name = w
        else:
            raise UserError(f"DATASET.TASKS names unknown task '{w}'; this suite has: "
                            f"{', '.join(members)}")
        if name not in out:
            out.append(name)
    return out


def compose(parts):
    """Concatenate datasets with global labels; returns train, val, test, tasks."""
    train, val, test, tasks = [], [], [], []
    offset = 0
    for part in parts:
        task_base = len(tasks)
        for t in part.tasks:
            tasks.append(replace(t, offset=offset + t.offset, classnames=list(t.classnames)))

        def shift(items):
            return [Datum(impath=d.impath, label=d.label + offset, domain=d.domain,
                          classname=d.classname, task=task_base + d.task) for d in (items or [])]

        train += shift(part.train_x)
        val += shift(part.val)
        test += shift(part.test)
        offset += sum(t.num_classes for t in part.tasks)
    return train, val, test, tasks


class MultiTaskDataset(DatasetBase):
    """Subclass and set ``members`` to registered dataset names."""

    members = []

    def __init__(self, cfg):
        names = select_tasks(self.members, list(cfg.DATASET.TASKS))
        parts = [DATASET_REGISTRY.get(n)(cfg) for n in names]
        train, val, test, tasks = compose(parts)
        super().__init__(train_x=train, val=val, test=test, tasks=tasks)
