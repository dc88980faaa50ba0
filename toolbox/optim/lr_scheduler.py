"""Epoch-wise learning-rate schedules with Dassl's warm-up.

The learning rate is a closed-form function of the epoch, so the scheduler's
state is just ``last_epoch`` (a plain state dict that ``weights_only`` loads;
Dassl's nested scheduler objects do not). Stepped once per epoch, as in Dassl.
"""
import math

from torch.optim.lr_scheduler import LRScheduler

from ..errors import UserError

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


def base_factor(name, epoch, max_epoch, stepsize, gamma):
    """Multiplier of the base lr at ``epoch`` for the main schedule."""
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max_epoch))
    if name == "single_step":
        step = stepsize[0] if isinstance(stepsize, (list, tuple)) else stepsize
        if step <= 0:
            step = max_epoch  # Dassl: stepsize -1 means no decay within training
        return gamma ** (epoch // step)
    milestones = sorted(stepsize)
    return gamma ** sum(1 for m in milestones if epoch >= m)


class WarmupScheduler(LRScheduler):
    """lr(k) = warm-up value for k < WARMUP_EPOCH, else the main schedule at
    k - WARMUP_EPOCH (WARMUP_RECOUNT) or k."""

    def __init__(self, optimizer, name, max_epoch, stepsize=(-1,), gamma=0.1, warmup_epoch=0,
                 warmup_type="constant", warmup_cons_lr=1e-5, warmup_min_lr=1e-5,
                 warmup_recount=True, last_epoch=-1):
        self.name = name
        self.max_epoch = max_epoch
        self.stepsize = stepsize
        self.gamma = gamma
        self.warmup_epoch = max(0, warmup_epoch)
        self.warmup_type = warmup_type
        self.warmup_cons_lr = warmup_cons_lr
        self.warmup_min_lr = warmup_min_lr
        self.warmup_recount = warmup_recount
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, k):
        if k < self.warmup_epoch:
            if self.warmup_type == "constant":
                return self.warmup_cons_lr
            if k == 0:
                return self.warmup_min_lr
            return base_lr * k / self.warmup_epoch
        main_k = k - self.warmup_epoch if self.warmup_recount else k
        return base_lr * base_factor(self.name, main_k, self.max_epoch, self.stepsize, self.gamma)

    def get_lr(self):
        return [self.lr_at(b, self.last_epoch) for b in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.get_lr()


def build_lr_scheduler(optimizer, optim_cfg):
    name = optim_cfg.LR_SCHEDULER
    if name not in AVAI_SCHEDS:
        raise UserError(f"unknown OPTIM.LR_SCHEDULER '{name}'; choose from {AVAI_SCHEDS}")
    if optim_cfg.WARMUP_EPOCH > 0 and optim_cfg.WARMUP_TYPE not in ("constant", "linear"):
        raise UserError(f"unknown OPTIM.WARMUP_TYPE '{optim_cfg.WARMUP_TYPE}'; use constant or linear")
    stepsize = list(optim_cfg.STEPSIZE) if isinstance(optim_cfg.STEPSIZE, (list, tuple)) \
        else [optim_cfg.STEPSIZE]
    if name == "multi_step" and any(s <= 0 for s in stepsize):
        raise UserError("OPTIM.STEPSIZE must list positive epochs for multi_step")
    return WarmupScheduler(
        optimizer, name, optim_cfg.MAX_EPOCH, stepsize=stepsize, gamma=optim_cfg.GAMMA,
        warmup_epoch=optim_cfg.WARMUP_EPOCH, warmup_type=optim_cfg.WARMUP_TYPE,
        warmup_cons_lr=optim_cfg.WARMUP_CONS_LR, warmup_min_lr=optim_cfg.WARMUP_MIN_LR,
        warmup_recount=optim_cfg.WARMUP_RECOUNT)
