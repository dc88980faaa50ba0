"""build_optimizer(model, optim_cfg, param_groups=None) as in dassl.optim."""
import torch
import torch.nn as nn

from ..errors import UserError

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def build_optimizer(model, optim_cfg, param_groups=None):
    """``model``: an nn.Module, an iterable of parameters, or None with param_groups."""
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise UserError(f"unknown OPTIM.NAME '{name}'; choose from {AVAI_OPTIMS}")
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY

    if param_groups is not None:
        params = param_groups
    elif isinstance(model, nn.Module):
        if optim_cfg.STAGED_LR:
            new_layers = optim_cfg.NEW_LAYERS
            if isinstance(new_layers, str):
                new_layers = [new_layers]
            base, new = [], []
            for n, module in model.named_children():
                (new if n in new_layers else base).extend(p for p in module.parameters())
            params = [{"params": base, "lr": lr * optim_cfg.BASE_LR_MULT}, {"params": new}]
        else:
            params = [p for p in model.parameters() if p.requires_grad]
    else:
        params = [p for p in model if p.requires_grad]

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd,
                                betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
    if name == "amsgrad":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, amsgrad=True,
                                betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd,
                                 betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd,
                             betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
