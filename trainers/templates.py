"""Hand-crafted prompt templates shared by zero-shot CLIP and methods that
use a hand-crafted view (per-task templates come from each dataset's
``templates`` attribute)."""
import torch

from .clip_model import encode_templates

SINGLE_TEMPLATE = ["a photo of a {}."]

# The 7 ImageNet templates CLIP's authors picked for ensembling.
ENSEMBLE_TEMPLATES = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]

TEMPLATE_MODES = ("task", "task_ensemble", "single", "ensemble")


def templates_for(task, mode):
    """Templates of ``task`` (a TaskInfo) under ``mode``."""
    if mode == "task":
        return task.templates[:1] or SINGLE_TEMPLATE
    if mode == "task_ensemble":
        return task.templates or SINGLE_TEMPLATE
    if mode == "single":
        return SINGLE_TEMPLATE
    if mode == "ensemble":
        return ENSEMBLE_TEMPLATES
    raise ValueError(mode)


def hand_crafted_features(clip_model, tasks, mode):
    """Normalised text features of every class of every task (n_classes, d)."""
    return torch.cat([encode_templates(clip_model, t.classnames, templates_for(t, mode))
                      for t in tasks])
