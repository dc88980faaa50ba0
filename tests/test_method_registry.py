"""The method registry (toolbox/methods.py): every method declares itself once, next
to its trainer; the image-encoder contract decides where the feature cache serves."""
import os
import os.path as osp
import re
import tempfile

import pytest
import torch
import torch.nn as nn

from tests.conftest import ROOT, make_cfg
from toolbox.engine import TRAINER_REGISTRY, build_trainer
from toolbox.errors import UserError
from toolbox.methods import (FROZEN_ENCODER, ImageEncoder, get_method, image_encoder_of,
                             load_methods)
from toolbox.utils import set_random_seed

import datasets  # noqa: F401

DEMO = "configs/datasets/demo.yaml"
COOP_TINY = "configs/trainers/CoOp/tiny_vit_ep10.yaml"


def test_every_declaration_names_a_registered_trainer_that_states_its_encoder_contract():
    registry = load_methods()
    assert len(registry) >= 8
    for name, m in registry.items():
        trainer = TRAINER_REGISTRY.get(m.trainer)
        # declared in the trainer class's own body, not inherited
        assert "image_encoder" in vars(trainer), name
        assert isinstance(image_encoder_of(trainer), ImageEncoder), name
        assert m.default_variant, name
        m.check_variant(m.default_variant)
        assert set(m.protocols) <= {"fewshot", "base2new", "xd", "dg"}


def test_unknown_method_is_one_line_naming_the_registered_ones():
    load_methods()
    with pytest.raises(UserError, match=r"unknown method 'nope'; choose from .*coop"):
        get_method("nope")


def test_a_subclass_does_not_inherit_the_frozen_contract():
    load_methods()
    coop = TRAINER_REGISTRY.get("CoOp")
    assert image_encoder_of(coop) == FROZEN_ENCODER

    class Child(coop):
        pass

    assert not image_encoder_of(Child).frozen_in_training
    assert not image_encoder_of(Child).frozen_in_evaluation


class _VisualPrompt(nn.Module):
    """A learnable offset added to the image encoder's patch embedding (conv1), as a
    stand-in for prompts inside the image tower."""

    def __init__(self, channels):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(channels, 1, 1))

    def hook(self, module, inputs, output):
        return output + self.delta


def _prompting_trainer(declare):
    """A throwaway CoOp variant whose image encoder carries a learnable prompt;
    ``declare``: its contract (None: it declares nothing)."""
    base = TRAINER_REGISTRY.get("CoOp")
    body = {}
    if declare is not None:
        body["image_encoder"] = declare

    def build_model(self):
        base.build_model(self)
        conv = self.clip_model.visual.conv1
        self.visual_prompt = _VisualPrompt(conv.out_channels).to(self.device)
        conv.register_forward_hook(self.visual_prompt.hook)
        with torch.no_grad():  # a prompt already trained: the encoder is not the frozen one
            self.visual_prompt.delta.normal_(0, 0.5)

    def encode_image(self, image):
        with self.autocast():
            feats = self.clip_model.encode_image(image)
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    body.update(build_model=build_model, encode_image=encode_image)
    return type("PromptedEncoderProbe", (base,), body)


def _evaluate(trainer_cls, root, cache_dir, enabled=True):
    out = tempfile.mkdtemp(dir=root)
    cfg = make_cfg(root, DEMO, COOP_TINY,
                   ["--trainer", "CoOp", "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", "['DemoDigit']",
                    "FEATURE_CACHE.DIR", cache_dir, "FEATURE_CACHE.ENABLED", str(enabled)])
    set_random_seed(1)
    cfg.defrost()
    cfg.freeze()
    trainer = trainer_cls(cfg)
    result = trainer.test("test")
    return trainer, result


def test_cache_never_serves_a_trainer_that_prompts_the_image_encoder(demo_root, tmp_path):
    """The undeclared (safe default) and the honestly declared prompting trainer read no
    cached feature: their accuracy equals the cache-disabled run's, while a trainer that
    lies (declares the encoder frozen) is served the frozen features and differs."""
    load_methods()
    cache = str(tmp_path / "cache")
    # warm the cache with the frozen encoder's features of the test split
    frozen, frozen_acc = _evaluate(TRAINER_REGISTRY.get("CoOp"), demo_root, cache)
    assert frozen.feature_cache is not None and os.listdir(cache)
    for declare in (None, ImageEncoder(frozen_in_training=False, frozen_in_evaluation=False)):
        probe = _prompting_trainer(declare)
        trainer, acc = _evaluate(probe, demo_root, cache)
        assert trainer.feature_cache is None
        _, acc_off = _evaluate(probe, demo_root, cache, enabled=False)
        assert acc == acc_off
    liar, liar_acc = _evaluate(_prompting_trainer(FROZEN_ENCODER), demo_root, cache)
    _, liar_off = _evaluate(_prompting_trainer(FROZEN_ENCODER), demo_root, cache, enabled=False)
    assert liar.feature_cache is not None
    assert liar_acc == frozen_acc != liar_off  # the wrong number the contract prevents


def test_declaring_frozen_while_training_the_image_encoder_is_refused(demo_root):
    load_methods()
    base = TRAINER_REGISTRY.get("CoOp")

    def build_model(self):
        base.build_model(self)
        visual = self.clip_model.visual
        for p in visual.parameters():
            p.requires_grad_(True)
        self.register_trainable("visual", visual)

    liar = type("TrainsFrozenEncoder", (base,), dict(image_encoder=FROZEN_ENCODER,
                                                     build_model=build_model))
    with pytest.raises(UserError, match="declares its image encoder frozen in training"):
        _evaluate(liar, demo_root, tempfile.mkdtemp())


# Method and variant names belong to trainers/ and scripts/<method>/: the shared code
# reads them from the registry.
SHARED = ["tools", "toolbox", "train.py", "scripts/common.sh", "scripts/main.sh",
          "scripts/protocols.sh", "scripts/protocol.sh", "scripts/compare_all.sh"]


def _shared_files():
    for entry in SHARED:
        path = osp.join(ROOT, entry)
        if osp.isfile(path):
            yield path
            continue
        for folder, _, files in os.walk(path):
            for f in files:
                if f.endswith((".py", ".sh")):
                    yield osp.join(folder, f)


def test_no_method_or_variant_name_in_the_shared_code():
    registry = load_methods()
    names = set()
    for m in registry.values():
        names |= {m.name, m.trainer, m.label} | set(m.variant_labels.values())
        # variants with capitals, digits or underscores (plain lower-case words such as
        # "task" or "soft" are common words, not names)
        names |= {v for v in m.variants if not re.fullmatch(r"[a-z]+", v)}
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, names), key=len,
                                                              reverse=True)) + r")(?![\w-])")
    found = []
    for path in _shared_files():
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                for m in pattern.finditer(line):
                    found.append(f"{osp.relpath(path, ROOT)}:{i}: {m.group(1)}")
    assert not found, "\n".join(found[:40])
