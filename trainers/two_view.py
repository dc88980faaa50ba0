"""CoOp's soft prompts next to a frozen hand-crafted view of the same classes:
the common ground of KgCoOp and DualViewMI (not a registered trainer).

The hand-crafted features are encoded once at build time from each task's
own templates (TRAINER.<NAME>.TEMPLATES) and never saved, so a model trained
on base classes rebuilds them for new classes.
"""
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from toolbox.errors import check_choice

from .clip_model import TextEncoder
from .coop import CoOp, PromptLearner
from .templates import TEMPLATE_MODES, hand_crafted_features


def add_soft_prompt_keys(node):
    node.N_CTX = 4  # context tokens (ignored when CTX_INIT is set: its token count is used)
    node.CTX_INIT = "a photo of a"  # initial context words
    # hand-crafted view: task (each task's first template) | task_ensemble (all
    # of its templates averaged) | single ("a photo of a {}.") | ensemble (CLIP's 7)
    node.TEMPLATES = "task"
    # where the class name sits in the soft prompt: end (after the context, as
    # CoOp's default) | middle | front
    node.CLASS_TOKEN_POSITION = "end"
    node.PREC = "fp16"  # fp16 | amp | bf16 | fp32 (fp32 always on CPU)


class TwoViewCoOp(CoOp):
    prec_key = None  # the TRAINER group of the subclass, e.g. "KGCOOP"

    @property
    def node(self):
        return self.cfg.TRAINER[self.prec_key]

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER[self.prec_key]
        check_choice(f"TRAINER.{self.prec_key}.TEMPLATES", node.TEMPLATES, TEMPLATE_MODES)
        check_choice(f"TRAINER.{self.prec_key}.CLASS_TOKEN_POSITION", node.CLASS_TOKEN_POSITION,
                     ("end", "middle", "front"))

    def build_model(self):
        node = self.node
        clip_model = self.clip_model = self.load_clip()
        print("Building custom CLIP")
        # one context shared by all classes, the class name at CLASS_TOKEN_POSITION
        coop_view = CN(dict(N_CTX=node.N_CTX, CTX_INIT=node.CTX_INIT, CSC=False,
                            CLASS_TOKEN_POSITION=node.CLASS_TOKEN_POSITION))
        self.prompt_learner = PromptLearner(coop_view, self.dm.dataset.classnames, clip_model)
        self.text_encoder = TextEncoder(clip_model)
        self.model = self.prompt_learner
        self.register_trainable("prompt_learner", self.prompt_learner)
        print(f"Encoding the hand-crafted view (templates: {node.TEMPLATES})")
        with self.autocast():
            hand = hand_crafted_features(clip_model, self.tasks, node.TEMPLATES)
        self.hand_text = F.normalize(hand.float(), dim=-1)
