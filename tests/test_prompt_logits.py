"""Trainer logits equal a direct computation with CLIP's own modules."""
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_cfg
from tests.test_clip_model import native_encode
from toolbox.engine import build_trainer
from trainers.clip_model import tokenize
from trainers.templates import ENSEMBLE_TEMPLATES

import datasets  # noqa: F401
import trainers  # noqa: F401


def build(root, trainer, config, *opts):
    cfg = make_cfg(root, "configs/datasets/demo.yaml", config,
                   ["--trainer", trainer, "--output-dir", str(root) + "/out", "--seed", "1",
                    "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", "['DemoDigit']", "VERBOSE", "False",
                    *opts])
    return build_trainer(cfg)


def direct_prompt_features(clip_model, classnames, ctx, position):
    """Build each prompt's token embeddings by hand and encode with clip's transformer."""
    n_ctx = ctx.shape[-2]
    feats = []
    for i, name in enumerate(classnames):
        c = ctx[i] if ctx.dim() == 3 else ctx
        n_name = len(tokenize([name])[0].nonzero()) - 2  # minus SOS/EOT
        half = n_ctx // 2
        if position == "end":
            text, slots = " ".join(["X"] * n_ctx) + f" {name}.", [(1, c)]
        elif position == "front":
            text, slots = f"{name} " + " ".join(["X"] * n_ctx) + ".", [(1 + n_name, c)]
        else:
            text = " ".join(["X"] * half) + f" {name} " + " ".join(["X"] * (n_ctx - half)) + "."
            slots = [(1, c[:half]), (1 + half + n_name, c[half:])]
        tok = tokenize([text])
        emb = clip_model.token_embedding(tok).clone()
        for start, vec in slots:
            emb[0, start:start + vec.shape[0]] = vec
        feats.append(native_encode(clip_model, emb, tok))
    return F.normalize(torch.cat(feats), dim=-1)


@pytest.mark.parametrize("position,csc", [("end", False), ("middle", False), ("front", False),
                                          ("end", True), ("middle", True)])
def test_coop_logits_equal_direct_computation(demo_root, position, csc):
    trainer = build(demo_root, "CoOp", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                    "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.N_CTX", "4",
                    "TRAINER.COOP.CSC", str(csc), "TRAINER.COOP.CLASS_TOKEN_POSITION", position)
    with torch.no_grad():  # make the context distinctive per class
        trainer.prompt_learner.ctx.normal_(0, 0.5)
    clip_model = trainer.clip_model
    names = trainer.dm.dataset.classnames
    assert names[:3] == ["zero", "one", "two"]
    images = torch.stack([trainer.dm.test_loader.dataset[i]["img"] for i in range(5)])
    trainer.set_model_mode("eval")
    got = trainer.model_inference(images)
    with torch.no_grad():
        text = direct_prompt_features(clip_model, names, trainer.prompt_learner.ctx, position)
        img = F.normalize(clip_model.encode_image(images), dim=-1)
        want = clip_model.logit_scale.exp() * img @ text.t()
    assert got.shape == (5, 10)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("mode", ["task", "ensemble"])
def test_zsclip_logits_equal_clip_encode_text_and_image(demo_root, mode):
    trainer = build(demo_root, "ZeroshotCLIP", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
                    "TRAINER.ZSCLIP.TEMPLATES", mode)
    m = trainer.clip_model
    names = trainer.dm.dataset.classnames
    templates = ["a photo of the digit {}."] if mode == "task" else ENSEMBLE_TEMPLATES
    images = torch.stack([trainer.dm.test_loader.dataset[i]["img"] for i in range(4)])
    with torch.no_grad():
        per_template = [F.normalize(m.encode_text(tokenize([t.format(n) for n in names])), dim=-1)
                        for t in templates]
        text = F.normalize(torch.stack(per_template).mean(0), dim=-1)
        want = m.logit_scale.exp() * F.normalize(m.encode_image(images), dim=-1) @ text.t()
    got = trainer.model_inference(images)
    assert torch.allclose(got, want, atol=1e-4)


def test_cocoop_logits_equal_direct_computation(demo_root):
    trainer = build(demo_root, "CoCoOp", "configs/trainers/CoCoOp/tiny_vit_c4_ep10_batch1_ctxv1.yaml")
    pl = trainer.prompt_learner
    m = trainer.clip_model
    names = trainer.dm.dataset.classnames
    images = torch.stack([trainer.dm.test_loader.dataset[i]["img"] for i in range(3)])
    trainer.current_task = torch.zeros(3, dtype=torch.long)
    got = trainer.model_inference(images)
    with torch.no_grad():
        img = F.normalize(m.encode_image(images), dim=-1)
        for i in range(3):
            ctx = pl.ctx + pl.meta_net(img[i:i + 1])[0]
            # CTX_INIT "a photo of a": the context replaces those 4 words
            text = direct_prompt_features(m, names, ctx, "end")
            want = m.logit_scale.exp() * img[i] @ text.t()
            assert torch.allclose(got[i], want, atol=1e-4)
