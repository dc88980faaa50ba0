"""MVPT and MUPT (MVLPT's vision-side prompts): the token sequence at every layer of the
trainer's image tower has the prompts right after CLS, after ln_pre; zero-length prompts
give the frozen model; MUPT's joint block maps each prompt token on its own (sequence
length 1, as upstream); each learns against its LR-0 control; an MVPT source run
initialises an MVPT target; ResNets are one error line."""
import tempfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.conftest import make_cfg, run_train
from tests.controls import LR0, assert_learned
from tests.test_mvlpt import batch_of, epoch_losses
from tests.test_vl_prompts import record_block_inputs, run_block
from toolbox.engine import build_trainer
from toolbox.utils import set_random_seed

import datasets  # noqa: F401
import trainers  # noqa: F401


def build(root, trainer, *opts, out=None, shots=2, seed=1):
    out = out or tempfile.mkdtemp(prefix=f"{trainer.lower()}-", dir=root)
    config = f"configs/trainers/{trainer}/tiny_vit_ep10.yaml"
    cfg = make_cfg(root, "configs/datasets/demo.yaml", config,
                   ["--trainer", trainer, "--output-dir", out, "--seed", str(seed),
                    "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "TRAIN.PRINT_FREQ", "1000", *opts])
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def test_mvpt_prompts_sit_after_cls_after_ln_pre_at_every_layer(demo_root):
    trainer = build(demo_root, "MVPT")
    tower, v = trainer.vision, trainer.clip_model.visual
    prompts = trainer.prompt_learner.vpt.detach()  # (layers, n, width): input + deep
    assert prompts.shape[0] == tower.layers >= 2
    assert trainer.image_encoder.frozen_in_training is False
    n = prompts.shape[1]
    image = batch_of(trainer)[0][:3]
    seen, handles = record_block_inputs(tower.blocks, tower.tdim == 1)
    with torch.no_grad():
        got = trainer.image_features(image)
    for h in handles:
        h.remove()
    with torch.no_grad():
        b = image.shape[0]
        x = v.conv1(image).flatten(2).transpose(1, 2)
        x = v.ln_pre(torch.cat([v.class_embedding.expand(b, 1, -1), x], 1) + v.positional_embedding)
        want = torch.cat([x[:, :1], prompts[0].expand(b, -1, -1), x[:, 1:]], 1)
        torch.testing.assert_close(seen[0], want, rtol=0, atol=1e-6)
        for i in range(1, tower.layers):  # deep: positions 1..n replaced before every block
            prev = run_block(tower, tower.blocks[i - 1], seen[i - 1])
            want = torch.cat([prev[:, :1], prompts[i].expand(b, -1, -1), prev[:, 1 + n:]], 1)
            torch.testing.assert_close(seen[i], want, rtol=0, atol=1e-6)
        last = run_block(tower, tower.blocks[-1], seen[-1])
        pooled = F.normalize(v.ln_post(last[:, 0]) @ v.proj, dim=-1)
        torch.testing.assert_close(got, pooled, rtol=0, atol=1e-6)
        # the text side is CLIP's frozen hand-written prompt, nothing learnt
        tokens = trainer.prompt_learner.tokens()
        frozen_text = F.normalize(trainer.clip_model.encode_text(tokens), dim=-1)
        torch.testing.assert_close(trainer.class_text_features(), frozen_text, rtol=0, atol=1e-5)
        # union loss (upstream's): cross-entropy over all 14 classes of the 3 tasks
        image, label, task = batch_of(trainer)
        loss, logits = trainer.forward_train(image, label, task)[:2]
        want = trainer.logit_scale * trainer.image_features(image) @ frozen_text.t()
        assert logits.shape == (len(label), 14)
        torch.testing.assert_close(loss, F.cross_entropy(want, label), rtol=0, atol=1e-5)
        image = image[:3]
        # zero-length prompts: exactly the frozen image encoder
        trainer.prompt_learner.vpt = nn.Parameter(torch.zeros(tower.layers, 0, tower.width))
        frozen = F.normalize(trainer.clip_model.encode_image(image), dim=-1)
        torch.testing.assert_close(trainer.image_features(image), frozen, rtol=0, atol=1e-6)


def test_mupt_joint_block_maps_each_token_alone(demo_root):
    trainer = build(demo_root, "MUPT")
    pl = trainer.prompt_learner
    with torch.no_grad():
        text, vis = pl.coupled()
        block = pl.joint.resblocks[0]
        # by hand, one token at a time: attention over a length-1 sequence is the value and
        # output projections; then the MLP, both with residuals
        def one(t):
            h = block.ln_1(t)
            d = h.shape[-1]
            w, bias = block.attn.in_proj_weight[2 * d:], block.attn.in_proj_bias[2 * d:]
            t = t + block.attn.out_proj(h @ w.t() + bias)
            return t + block.mlp(block.ln_2(t))
        want_text = pl.text_post(one(pl.text_pre(pl.ctx)))
        want_vis = pl.vision_post(one(pl.vision_pre(pl.vpt)))
        torch.testing.assert_close(text, want_text, rtol=0, atol=1e-5)
        torch.testing.assert_close(vis, want_vis, rtol=0, atol=1e-5)
        # the text prompt enters the middle-position CoOp prompt, the visual ones the tower
        assert pl.assembler.position == "middle" and text.shape == pl.ctx.shape
        emb = pl.text_embeddings()
        half = pl.ctx.shape[0] // 2
        torch.testing.assert_close(emb[:, 1:1 + half], text[:half].expand(len(emb), -1, -1))


# MVPT's small uniform visual prompts move slowly at the recipe's lr on 4 epochs; MUPT's
# joint block moves fast and overshoots at 0.02
@pytest.mark.parametrize("trainer,lr", [("MVPT", "0.02"), ("MUPT", "0.002")])
def test_learns_on_demo_against_lr0_control(demo_root, trainer, lr):
    opts = ("OPTIM.MAX_EPOCH", "4", "OPTIM.LR", lr, "TEST.FINAL_MODEL", "last_step")
    control = epoch_losses(build(demo_root, trainer, *opts, *LR0, shots=4))
    trained = epoch_losses(build(demo_root, trainer, *opts, shots=4))
    print(assert_learned(trained, control))


def test_mvpt_source_initialises_an_mvpt_target(demo_root):
    out = tempfile.mkdtemp(prefix="mvpt-src-", dir=demo_root)
    # one fixed text prompt for both ("template" would take each suite's first task's words)
    text = ("TRAINER.MVPT.CTX_INIT", "a photo of a")
    src = build(demo_root, "MVPT", *text, "DATASET.TASKS", "['DemoDigit', 'DemoParity']",
                "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "0", out=out)
    before = src.prompt_learner.vpt.detach().clone()
    src.train()
    learnt = src.prompt_learner.vpt.detach()
    assert not torch.allclose(before, learnt)
    target = build(demo_root, "MVPT", *text, "DATASET.TASKS", "['DemoParity']",
                   "MODEL.INIT_FROM", f"['{out}']")
    assert torch.equal(target.prompt_learner.vpt.detach(), learnt)
    image = batch_of(target, per_task=4)[0]
    src.set_model_mode("eval")
    target.set_model_mode("eval")
    with torch.no_grad():
        src._eval_text = target._eval_text = None
        want = src.model_inference(image)[:, 10:12]  # DemoParity's classes in the source
        got = target.model_inference(image)
    assert got.shape == (4, 2) and torch.allclose(got, want, atol=1e-5)


def test_resnet_is_one_error_line(demo_root, tmp_path):
    proc = run_train("--root", demo_root, "--trainer", "MVPT",
                     "--dataset-config-file", "configs/datasets/demo_digit.yaml",
                     "--config-file", "configs/trainers/MVPT/tiny_vit_ep10.yaml",
                     "--output-dir", tmp_path / "o", "MODEL.BACKBONE.NAME", "tiny_rn", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "MVPT" in lines[0] and "tiny_rn" in lines[0]
