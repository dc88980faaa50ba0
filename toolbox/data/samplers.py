"""Samplers: Dassl's names plus a task-grouped batch sampler."""
from collections import defaultdict

import torch
from torch.utils.data.sampler import RandomSampler, Sampler, SequentialSampler

from ..errors import UserError


class TaskGroupedBatchSampler(Sampler):
    """Batches drawn from one task at a time.

    A batch with a single task lets a multi-task trainer encode only that
    task's class prompts. Order is random (torch RNG) and covers each sample
    once per epoch; a task's last batch may be smaller.
    """

    def __init__(self, data_source, batch_size, drop_last=False):
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.by_task = defaultdict(list)
        for i, item in enumerate(data_source):
            self.by_task[item.task].append(i)

    def _batches(self):
        batches = []
        for task in sorted(self.by_task):
            idxs = self.by_task[task]
            perm = torch.randperm(len(idxs)).tolist()
            for s in range(0, len(idxs), self.batch_size):
                chunk = [idxs[p] for p in perm[s:s + self.batch_size]]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        order = torch.randperm(len(batches)).tolist()
        return [batches[o] for o in order]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self):
        n = 0
        for idxs in self.by_task.values():
            full, rest = divmod(len(idxs), self.batch_size)
            n += full + (1 if rest and not self.drop_last else 0)
        return n


def build_sampler(sampler_type, cfg=None, data_source=None, batch_size=32, n_domain=0, n_ins=2):
    if sampler_type == "RandomSampler":
        return RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    raise UserError(f"unknown sampler '{sampler_type}'; use RandomSampler, SequentialSampler "
                    "or TaskGroupedBatchSampler")


BATCH_SAMPLERS = {"TaskGroupedBatchSampler": TaskGroupedBatchSampler}
