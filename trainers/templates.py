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


# PromptSRC's text-diversity templates: CLIP's 80 ImageNet prompt-engineering templates
# (OpenAI's CLIP notebook) with "a photo of a {}." moved to the front, cut to 60.
PROMPTSRC_TEMPLATES = [
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.",
    "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.",
    "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.",
    "a sketch of a {}.", "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.",
    "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.",
    "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
]
