"""A learning rate stepped once per iteration (Tip-Adapter-F and CLIP-LoRA anneal a
cosine over all training iterations, not per epoch as Dassl does), and a training
length given in iterations rather than epochs."""
import itertools
import math

import torch


def adamw(params, optim_cfg, eps=1e-8):
    """AdamW from OPTIM.LR / WEIGHT_DECAY / ADAM_BETA1-2, with its own ``eps``
    (Tip-Adapter-F uses 1e-4; toolbox's build_optimizer has no eps key)."""
    return torch.optim.AdamW(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY,
                             betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2), eps=eps)


def cosine_per_iteration(optimizer, total_iters, eta_min=0.0):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, int(total_iters)),
                                                      eta_min=eta_min)


class PerIterationSchedule:
    """Trainer mixin: every registered scheduler steps after every optimizer step; the
    once-per-epoch step of ClipTrainer.forward_backward is switched off."""

    def optimize(self, loss):
        super().optimize(loss)
        for name in self.get_model_names():
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def update_lr(self, names=None):
        pass


class Truncated:
    """The first ``n`` batches of a loader (the last, partial epoch of a run measured
    in iterations)."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size

    def __len__(self):
        return min(self.n, len(self.loader))

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


def epochs_for(total_iters, batches_per_epoch):
    return max(1, math.ceil(total_iters / max(1, batches_per_epoch)))
