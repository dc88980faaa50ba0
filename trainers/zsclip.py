"""Zero-shot CLIP with hand-crafted templates (one generic template, each
task's own templates, or an ensemble)."""
from yacs.config import CfgNode as CN

from toolbox.engine import TRAINER_REGISTRY
from toolbox.methods import FROZEN_ENCODER, Method, Setting, register_method
from toolbox.errors import check_choice

from .base import ClipTrainer
from .templates import TEMPLATE_MODES, hand_crafted_features


def extend_cfg(cfg):
    cfg.TRAINER.ZSCLIP = CN()
    # task: each task's hand-crafted template; task_ensemble: all of them
    # averaged; single: "a photo of a {}."; ensemble: CLIP's 7 ImageNet templates
    cfg.TRAINER.ZSCLIP.TEMPLATES = "task"
    cfg.TRAINER.ZSCLIP.PREC = "fp16"


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(ClipTrainer):
    image_encoder = FROZEN_ENCODER  # frozen: the feature cache may serve both phases
    prec_key = "ZSCLIP"
    trains_on_images = False
    zero_shot = True  # results.json: shots 0 (toolbox/engine/trainer.py results_shots)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_choice("TRAINER.ZSCLIP.TEMPLATES", cfg.TRAINER.ZSCLIP.TEMPLATES, TEMPLATE_MODES)

    def build_model(self):
        self.clip_model = self.load_clip()
        mode = self.cfg.TRAINER.ZSCLIP.TEMPLATES
        print(f"Encoding class prompts (templates: {mode})")
        with self.autocast():
            self.text = hand_crafted_features(self.clip_model, self.tasks, mode)

    def class_text_features(self):
        return self.text

    def train(self):
        """Nothing to train: evaluate and write results."""
        self.epoch = 0
        self.test()


@register_method
class ZeroshotCLIPMethod(Method):
    name, trainer, label, colour, order = "zsclip", "ZeroshotCLIP", "ZS-CLIP", "black", 80
    quick = True  # in the benches' default demo grids
    variants = TEMPLATE_MODES
    default_variant = "task"
    trains = False  # nothing is trained: one seed unless asked (grid --zs-seeds)

    def setting(self, ctx, variant):
        # stored as 0 shots whatever the grid's shots are
        return Setting(self.trainer, ctx.backbone, variant, ["TRAINER.ZSCLIP.TEMPLATES", variant],
                       shots=0)
