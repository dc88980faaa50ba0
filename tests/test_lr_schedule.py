"""The learning rate per epoch follows Dassl's constant warm-up + cosine."""
import math

import torch

from tests.conftest import make_cfg
from toolbox.optim import build_lr_scheduler, build_optimizer


def dassl_lr(k, lr, max_epoch, warmup_lr):
    return warmup_lr if k == 0 else 0.5 * lr * (1 + math.cos(math.pi * (k - 1) / max_epoch))


def test_lr_per_epoch_matches_dassl_formula(tmp_path):
    cfg = make_cfg(tmp_path, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml")
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.WARMUP_EPOCH) == (0.002, 50, 1)
    param = torch.nn.Parameter(torch.zeros(3))
    optim = build_optimizer([param], cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    seen = []
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        seen.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    expected = [dassl_lr(k, 0.002, 50, 1e-5) for k in range(50)]
    assert all(abs(a - b) < 1e-12 for a, b in zip(seen, expected)), (seen[:4], expected[:4])
    assert seen[1] == 0.002


def test_scheduler_state_is_plain_and_resumable(tmp_path):
    cfg = make_cfg(tmp_path, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml")
    p = torch.nn.Parameter(torch.zeros(1))
    optim = build_optimizer([p], cfg.OPTIM)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    for _ in range(7):
        optim.step()
        sched.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # no pickled objects
    optim2 = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.OPTIM)
    sched2 = build_lr_scheduler(optim2, cfg.OPTIM)
    sched2.load_state_dict(state)
    optim2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    optim.step(); sched.step(); optim2.step(); sched2.step()
    assert optim.param_groups[0]["lr"] == optim2.param_groups[0]["lr"] == dassl_lr(8, 0.002, 50, 1e-5)
