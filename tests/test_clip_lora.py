"""CLIP-LoRA: adapters on every attention block of both towers of OpenAI and OpenCLIP
models (counted; none is an error), a fresh adapter leaving every logit unchanged, a step
changing only adapter weights, learning against an LR-0 control, 500 x shots iterations,
train.py on the demo."""
import json
import tempfile

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_cfg, run_train
from tests.controls import LR0, assert_learned, epoch_losses
from toolbox.engine import build_trainer
from toolbox.errors import UserError
from toolbox.utils import set_random_seed
from trainers.backbones import create_backbone
from trainers.clip_model import text_tower
from trainers.lora_layers import LoRAMultiheadAttention, attention_blocks

import datasets  # noqa: F401
import trainers  # noqa: F401

OPENCLIP = ("MODEL.BACKBONE.NAME", "open_clip:tiny-ViT", "MODEL.BACKBONE.PRETRAINED", "random")


def build(root, *opts, shots=2, config="configs/trainers/CLIPLoRA/tiny_vit_it10.yaml"):
    out = tempfile.mkdtemp(prefix="lora-", dir=root)
    cfg = make_cfg(root, "configs/datasets/demo.yaml", config,
                   ["--trainer", "CLIPLoRA", "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "TRAIN.PRINT_FREQ", "1000", *opts])
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def some_images(trainer, n=6):
    ds = trainer.train_loader_x.dataset
    items = [ds[i] for i in range(n)]
    return (torch.stack([x["img"] for x in items]), torch.tensor([x["label"] for x in items]),
            torch.tensor([x["task"] for x in items]))


@pytest.mark.parametrize("opts", [(), OPENCLIP], ids=["openai-tiny_vit", "open_clip-tiny-ViT"])
def test_every_block_of_both_towers_is_adapted_and_a_fresh_adapter_changes_nothing(demo_root,
                                                                                   opts):
    trainer = build(demo_root, *opts)
    m = trainer.clip_model
    for name, tower in (("text", text_tower(m)), ("visual", m.visual)):
        blocks = attention_blocks(tower)
        adapted = [b for b in blocks if isinstance(b.attn, LoRAMultiheadAttention)]
        assert len(blocks) == 2 and len(adapted) == 2, name  # the tiny towers: 2 blocks each
        assert all(sorted(b.attn.branches) == ["k", "q", "v"] for b in adapted)
    assert sum(p.numel() for p in trainer.lora.parameters()) == 2 * 2 * 3 * 2 * (2 * 64)
    # the same model without adapters, CLIP's own encoders
    entry = trainer.cfg.MODEL.BACKBONE
    plain = create_backbone(entry.NAME, random_weights=entry.PRETRAINED == "random")[0] \
        if entry.PRETRAINED else create_backbone(entry.NAME)[0]
    image, _, _ = some_images(trainer)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        got = trainer.model_inference(image)
    # the reference through nn.MultiheadAttention's general path: without gradients and
    # trainable weights, OpenCLIP's batch-first blocks take torch's fused inference kernel,
    # which rounds differently (about 1e-6 on features)
    for p in plain.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        text = F.normalize(plain.encode_text(trainer.class_tokens), dim=-1)
        want = trainer.logit_scale * F.normalize(plain.encode_image(image), dim=-1) @ text.t()
    # to 1e-6 of the largest logit: float32 rounding (the trainer's text encoder stops after
    # the last end-of-text token, encode_text runs all 77 positions)
    assert (got - want.detach()).abs().max() <= 1e-6 * want.abs().max()


def test_a_step_changes_only_adapter_weights(demo_root):
    trainer = build(demo_root)
    frozen = {k: v.clone() for k, v in trainer.clip_model.state_dict().items()
              if "branches" not in k}
    before = {k: v.clone() for k, v in trainer.lora.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 10
    image, label, task = some_images(trainer)
    trainer.forward_backward({"img": image, "label": label, "task": task})
    after = trainer.clip_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    changed = [k for k, v in trainer.lora.state_dict().items() if not torch.equal(v, before[k])]
    assert {k.rsplit(".", 1)[-1] for k in changed} == {"A", "B"}  # B from zero; A by decay
    assert all(trainer.lora.state_dict()[k].abs().sum() > 0 for k in changed if k.endswith("B"))
    assert [n for n in trainer.get_model_names()] == ["lora"]


def test_lora_learns_against_lr0_control_for_iterations_per_shot(demo_root):
    opts = ()  # the tiny config as it is (dropout 0.25 included)
    control = epoch_losses(build(demo_root, *opts, *LR0, shots=4))
    trainer = build(demo_root, *opts, shots=4)
    losses = epoch_losses(trainer)
    # ITERS_PER_SHOT x shots iterations (the last epoch cut short), one lr step each
    assert trainer._scheds["lora"].last_epoch == trainer.total_iters == 10 * 4
    assert trainer._scheds["lora"].get_last_lr()[0] == pytest.approx(1e-6)  # the cosine's floor
    print(assert_learned(losses, control))


def test_resnet_image_tower_is_refused_not_silently_skipped(demo_root):
    with pytest.raises(UserError, match="visual tower has no attention layers"):
        build(demo_root, "MODEL.BACKBONE.NAME", "tiny_rn")
    trainer = build(demo_root, config="configs/trainers/CLIPLoRA/tiny_rn_it10.yaml")  # text only
    assert list(trainer.lora) == ["text"] and len(trainer.lora["text"]) == 2


def test_train_py_on_one_task_with_an_openclip_model(demo_root, tmp_path):
    out = tmp_path / "lora"
    run_train("--root", demo_root, "--seed", "1", "--trainer", "CLIPLoRA",
              "--dataset-config-file", "configs/datasets/demo_digit.yaml",
              "--config-file", "configs/trainers/CLIPLoRA/tiny_vit_it10.yaml",
              "--output-dir", out, "DATASET.NUM_SHOTS", "1", *OPENCLIP)
    res = json.load(open(out / "results.json"))
    assert res["lora"]["adapted_blocks"] == {"text": 2, "visual": 2}
    assert res["lora"]["iterations"] == 10 and res["tasks"][0]["task"] == "DemoDigit"
