"""Checkpoint io. Checkpoints hold plain state dicts only, so they load with
``torch.load(weights_only=True)`` (the default since torch 2.6)."""
import os
import os.path as osp
import shutil
import warnings
from collections import OrderedDict

import torch

from ..errors import UserError
from .tools import atomic_write, mkdir_if_missing


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True,
                    model_name=""):
    """Save ``state`` as ``save_dir/model.pth.tar-<epoch>`` (atomically) and
    point ``save_dir/checkpoint`` at it, as Dassl does."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state_dict = state["state_dict"]
        state["state_dict"] = OrderedDict(
            (k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items()
        )
    epoch = state["epoch"]
    if not model_name:
        model_name = "model.pth.tar-" + str(epoch)
    fpath = osp.join(save_dir, model_name)
    atomic_write(fpath, lambda f: torch.save(state, f), mode="wb")
    atomic_write(osp.join(save_dir, "checkpoint"), lambda f: f.write(model_name + "\n"))
    if is_best:
        def copy(f):
            with open(fpath, "rb") as src:
                shutil.copyfileobj(src, f)
        atomic_write(osp.join(save_dir, "model-best.pth.tar"), copy, mode="wb")
    return fpath


def prune_checkpoints(save_dir, keep):
    """Delete all but the newest ``keep`` epoch checkpoints (model.pth.tar-<epoch>)
    in ``save_dir``; model-best.pth.tar and the newest are never deleted."""
    epochs = sorted(int(f.rsplit("-", 1)[1]) for f in os.listdir(save_dir)
                    if f.startswith("model.pth.tar-") and f.rsplit("-", 1)[1].isdigit())
    for epoch in epochs[:-max(1, keep)]:
        try:
            os.remove(osp.join(save_dir, f"model.pth.tar-{epoch}"))
        except FileNotFoundError:
            pass


def load_checkpoint(fpath):
    if fpath is None:
        raise ValueError("File path is None")
    if not osp.exists(fpath):
        raise UserError(f"checkpoint not found: {fpath} (check --model-dir and --load-epoch)")
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load checkpoint {fpath} ({type(e).__name__}); the file is "
                        "damaged or not a toolbox checkpoint: delete it and retrain") from None


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Load the checkpoint named in ``fdir/checkpoint``; return its epoch."""
    with open(osp.join(fdir, "checkpoint"), "r") as f:
        fname = f.readline().strip()
    ckpt = load_checkpoint(osp.join(fdir, fname))
    model.load_state_dict(ckpt["state_dict"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["epoch"]


def load_pretrained_weights(model, weight_path):
    """Load matching weights (by name and shape), report what was skipped."""
    ckpt = load_checkpoint(weight_path)
    state_dict = ckpt.get("state_dict", ckpt)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[7:]
        if k in model_dict and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f"no weights in {weight_path} match the model; nothing was loaded")
    else:
        print(f"Loaded pretrained weights from {weight_path} ({len(matched)} tensors)")
        if discarded:
            print(f"** Skipped (name or size mismatch): {discarded}")


def count_num_param(model=None, params=None):
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in params)
