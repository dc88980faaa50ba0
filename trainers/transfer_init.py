"""MODEL.INIT_FROM: start a run from the weights of earlier runs (MVLPT's multitask prompt
initialisation: the source runs' best-val checkpoints, averaged, initialise every target
task, which is then fine-tuned as usual).

For every trainable model of this trainer (its checkpoint folder ``<run>/<name>/``), the
checkpoint of each listed run (model-best.pth.tar where the run saved one, else its last)
is read, the tensors are averaged over the runs, and every tensor whose name and shape
this model has is loaded. Tensors that do not fit (e.g. SoftCPT's per-task contexts on a
target suite with another number of tasks) are skipped and listed; the meta network, a
shared context and the like transfer. Only trainable weights are saved in checkpoints
here, so frozen CLIP weights and class-name buffers are never averaged (upstream's
avg_ckpt.py averages whatever the state dict holds).
"""
import os.path as osp

import torch

from toolbox.run_folder import saved_backbone
from toolbox.errors import UserError
from toolbox.utils.torchtools import load_checkpoint


def checkpoint_file(run, name):
    """The checkpoint of model ``name`` in run folder ``run``: best-val, else the last."""
    folder = osp.join(osp.expanduser(run), name)
    best = osp.join(folder, "model-best.pth.tar")
    if osp.isfile(best):
        return best
    pointer = osp.join(folder, "checkpoint")
    if osp.isfile(pointer):
        with open(pointer) as f:
            return osp.join(folder, f.readline().strip())
    raise UserError(f"MODEL.INIT_FROM: no saved model '{name}' in {run} (no {name}/"
                    "model-best.pth.tar or checkpoint); give the output folder of a finished "
                    "training run of a method with the same trainable parts (TRAIN.CHECKPOINT_FREQ "
                    "0 still saves the last epoch)")


def averaged_state(paths, backbone):
    """The mean over ``paths`` of their checkpoints' state dicts (floating tensors
    averaged; others taken from the first)."""
    states = []
    for path in paths:
        ckpt = load_checkpoint(path)
        theirs = saved_backbone(ckpt)
        if theirs and theirs != backbone:
            raise UserError(f"MODEL.INIT_FROM: {path} was trained on backbone {theirs}, this run's "
                            f"is {backbone}; prompts live in one text encoder's space: use source "
                            "runs of the same backbone")
        state = ckpt.get("state_dict")
        if not isinstance(state, dict):
            raise UserError(f"MODEL.INIT_FROM: {path} holds no state_dict; it is not a "
                            "checkpoint written by train.py")
        states.append(state)
    keys = [k for k in states[0] if all(k in s and s[k].shape == states[0][k].shape
                                        for s in states)]
    out = {}
    for k in keys:
        if torch.is_floating_point(states[0][k]):
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
        else:
            out[k] = states[0][k]
    return out


def init_from_runs(trainer, runs):
    """Load the averaged weights of ``runs`` into every registered model of ``trainer``."""
    runs = [str(r) for r in runs]
    backbone = trainer.cfg.MODEL.BACKBONE.NAME
    names = trainer.get_model_names()
    if not names:
        raise UserError(f"MODEL.INIT_FROM: {type(trainer).__name__} has no trainable model to "
                        "initialise; drop MODEL.INIT_FROM")
    for name in names:
        paths = [checkpoint_file(r, name) for r in runs]
        source = averaged_state(paths, backbone)
        model = trainer._models[name]
        mine = model.state_dict()
        fits = {k: v for k, v in source.items() if k in mine and v.shape == mine[k].shape}
        skipped = sorted(set(source) - set(fits)) + sorted(set(mine) - set(source))
        if not fits:
            raise UserError(f"MODEL.INIT_FROM: nothing in {paths[0]} fits model '{name}' of "
                            f"{type(trainer).__name__} (its tensors: "
                            f"{', '.join(sorted(mine)[:4])}; "
                            f"the checkpoint's: {', '.join(sorted(source)[:4])}); initialise from "
                            "runs of the same method and backbone")
        mine.update({k: v.to(mine[k].device, mine[k].dtype) for k, v in fits.items()})
        model.load_state_dict(mine, strict=True)
        print(f"Initialised {name} from {len(paths)} run(s) (averaged): "
              f"{', '.join(sorted(fits))}" + (f"; kept this run's own: {', '.join(skipped)}"
                                                if skipped else ""))
