"""IVLP, MaPLe and PromptSRC: the layer-by-layer towers (zero prompts give the frozen
model, the token sequence at every layer equals a hand-built one), MaPLe's coupling,
PromptSRC's loss terms and GPA, learning against LR-0 controls on both families,
no feature cache, exact resume, and the one-line refusal of ResNets."""
import json
import os.path as osp
import shutil

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_cfg, run_train
from tests.controls import LR0, assert_learned
from toolbox.engine import build_trainer
from toolbox.errors import UserError
from toolbox.utils import set_random_seed
from trainers.backbones import create_backbone
from trainers.clip_model import tokenize
from trainers.prompted_towers import DeepTextEncoder, VisionTower, _openai_block
from trainers.promptsrc import gpa_weights

import datasets  # noqa: F401
import trainers  # noqa: F401

CONFIGS = {t: f"configs/trainers/{t}/tiny_vit_ep10.yaml" for t in ("IVLP", "MaPLe", "PromptSRC")}
OC_TINY = ("MODEL.BACKBONE.NAME", "open_clip:tiny-ViT", "MODEL.BACKBONE.PRETRAINED", "random")


def three_layer_clip():
    """An OpenAI-layout CLIP with 3 layers per tower and a vision width (128) unlike
    the text width (64): depths below the layer count, widths never hard-coded."""
    from clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(embed_dim=64, image_resolution=32, vision_layers=3, vision_width=128,
                vision_patch_size=8, context_length=77, vocab_size=49408, transformer_width=64,
                transformer_heads=1, transformer_layers=3).eval()


def models():
    yield "openai_3layer", three_layer_clip()
    yield "open_clip:tiny-ViT", create_backbone("open_clip:tiny-ViT", pretrained="random")[0]


def build(root, trainer, out, *opts, shots="2"):
    cfg = make_cfg(root, "configs/datasets/demo_digit.yaml", CONFIGS[trainer],
                   ["--trainer", trainer, "--output-dir", str(out), "--seed", "1",
                    "DATASET.NUM_SHOTS", shots, "VERBOSE", "False", *opts])
    return build_trainer(cfg)


# ---- the towers --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_vit", "open_clip:tiny-ViT"])
def test_zero_prompts_give_the_frozen_towers(name):
    model = create_backbone(name, pretrained="random" if name.startswith("open") else "")[0]
    image = torch.randn(3, 3, 32, 32)
    tower = VisionTower(model)
    frozen = model.encode_image(image)
    empty = torch.zeros(0, tower.width)
    for prompts in ((), [empty], [empty, empty]):  # no prompts, prompt length 0
        torch.testing.assert_close(tower(image, prompts), frozen, rtol=0, atol=1e-6)
    text = DeepTextEncoder(model)
    tok = tokenize(["a photo of a seven.", "nine."])
    want = model.encode_text(tok)
    got = text(text.tower.embed(tok), tok, [None, torch.zeros(0, text.width)], n_ctx=0)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def record_block_inputs(blocks, batch_first):
    """Inputs of every block (batch-first), via a pre-hook on its first LayerNorm."""
    seen = []

    def hook(_module, args):
        x = args[0]
        seen.append(x.detach() if batch_first else x.detach().transpose(0, 1))

    handles = [b.ln_1.register_forward_pre_hook(hook) for b in blocks]
    return seen, handles


def run_block(tower_like, block, x_bf):
    """Block output (batch-first) of a batch-first input, in the tower's own layout."""
    x = x_bf if tower_like.tdim == 1 else x_bf.transpose(0, 1)
    y = _openai_block(block, x, None) if tower_like.openai else block(x)
    return y if tower_like.tdim == 1 else y.transpose(0, 1)


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("placement", [("append", "before_ln_pre"), ("after_cls", "after_ln_pre")])
def test_vision_sequence_at_each_layer_is_the_hand_built_one(depth, placement):
    position, stage = placement
    for name, model in models():
        tower = VisionTower(model)
        v, n = model.visual, 3
        torch.manual_seed(1)
        prompts = [torch.randn(n, tower.width) for _ in range(depth)]
        image = torch.randn(2, 3, 32, 32)
        seen, handles = record_block_inputs(tower.blocks, tower.tdim == 1)
        with torch.no_grad():
            out = tower(image, prompts, position, stage)
        for h in handles:
            h.remove()
        # by hand: patches, CLS, positional embedding; prompts get none
        with torch.no_grad():
            x = v.conv1(image).flatten(2).transpose(1, 2)
            x = torch.cat([v.class_embedding.expand(2, 1, -1), x], 1) + v.positional_embedding
            p0 = prompts[0].expand(2, -1, -1)
            if position == "append":
                x0 = v.ln_pre(torch.cat([x, p0], 1))
            else:
                y = v.ln_pre(x)
                x0 = torch.cat([y[:, :1], p0, y[:, 1:]], 1)
            torch.testing.assert_close(seen[0], x0, rtol=0, atol=1e-6)
            for i in range(1, len(tower.blocks)):
                prev = run_block(tower, tower.blocks[i - 1], seen[i - 1])
                if i < depth:  # the previous layer's prompt outputs dropped, new ones in
                    pi = prompts[i].expand(2, -1, -1)
                    want = (torch.cat([prev[:, :-n], pi], 1) if position == "append" else
                            torch.cat([prev[:, :1], pi, prev[:, 1 + n:]], 1))
                else:  # past the depth: everything carried, prompts included
                    want = prev
                torch.testing.assert_close(seen[i], want, rtol=0, atol=1e-6, msg=f"{name} {i}")
            last = run_block(tower, tower.blocks[-1], seen[-1])
            pooled = v.ln_post(last[:, 0]) @ v.proj
        torch.testing.assert_close(out, pooled, rtol=0, atol=1e-6)
        assert seen[0].shape[1] == 1 + (32 // 8) ** 2 + n


@pytest.mark.parametrize("depth", [2, 3])
def test_text_sequence_replaces_the_tokens_after_sos(depth):
    for name, model in models():
        enc = DeepTextEncoder(model)
        depth_here = min(depth, enc.layers)
        n = 2
        tok = tokenize(["X X of the digit seven.", "X X nine."])
        torch.manual_seed(2)
        emb = enc.tower.embed(tok).detach()
        emb[:, 1:1 + n] = torch.randn(n, enc.width)  # the layer-0 context
        deep = [None] + [torch.randn(n, enc.width) for _ in range(depth_here - 1)]
        seen, handles = record_block_inputs(enc.blocks, enc.tdim == 1)
        with torch.no_grad():
            out = enc(emb, tok, deep, n_ctx=n)
        for h in handles:
            h.remove()
        length = int(tok.argmax(-1).max()) + 1
        pos = enc.tower.positional_embedding[:length]
        mask = torch.full((length, length), float("-inf")).triu_(1)
        with torch.no_grad():
            torch.testing.assert_close(seen[0], emb[:, :length] + pos, rtol=0, atol=1e-6)
            for i in range(1, enc.layers):
                x = seen[i - 1] if enc.tdim == 1 else seen[i - 1].transpose(0, 1)
                b = enc.blocks[i - 1]
                y = _openai_block(b, x, mask) if enc.openai else b(x, attn_mask=mask)
                prev = y if enc.tdim == 1 else y.transpose(0, 1)
                want = prev
                if i < depth_here:
                    want = torch.cat([prev[:, :1], deep[i].expand(2, -1, -1), prev[:, 1 + n:]], 1)
                torch.testing.assert_close(seen[i], want, rtol=0, atol=1e-6, msg=f"{name} {i}")
        assert out.shape == (2, enc.tower.text_projection.shape[-1]
                             if not isinstance(enc.tower.text_projection, torch.nn.Linear)
                             else enc.tower.text_projection.out_features)


# ---- MaPLe's coupling ------------------------------------------------------------------------

def test_maple_vision_prompts_are_the_coupling_maps_of_the_text_prompts(demo_root, tmp_path):
    trainer = build(demo_root, "MaPLe", tmp_path, "TEST.NO_TEST", "True")
    pl = trainer.prompt_learner
    prompts = pl.layer_prompts()
    assert len(prompts["vision"]) == len(prompts["text"]) == 2 and prompts["text"][0] is None
    ctx = pl.text_ctx.ctx
    want = [ctx @ pl.proj.weight.t() + pl.proj.bias]
    for p, f in zip(pl.compound_prompts_text, pl.compound_projections):
        want.append(p @ f.weight.t() + f.bias)
    for got, w in zip(prompts["vision"], want):
        torch.testing.assert_close(got, w, rtol=0, atol=1e-6)
    # the deep maps start as copies of one Linear; the layer-0 map is its own
    # the gradient reaches every coupling map through the image tower
    trainer.model_zero_grad()
    batch = next(iter(trainer.train_loader_x))
    loss = trainer.forward_train(batch["img"], batch["label"], batch["task"])[0]
    loss.backward()
    for module in [pl.proj, *pl.compound_projections]:
        assert module.weight.grad.abs().sum() > 0
    assert pl.compound_prompts_text[0].grad.abs().sum() > 0


def test_maple_widths_come_from_the_backbone():
    from types import SimpleNamespace

    from trainers.maple import MaPLePromptLearner

    model = three_layer_clip()
    node = SimpleNamespace(N_CTX=2, PROMPT_DEPTH=3, CTX_INIT="a photo of a")
    pl = MaPLePromptLearner(node, ["cat", "dog"], model, VisionTower(model).width)
    shapes = [tuple(p.shape) for p in pl.layer_prompts()["vision"]]
    assert shapes == [(2, 128)] * 3  # text width 64 -> vision width 128
    deep = pl.compound_projections
    assert torch.equal(deep[0].weight, deep[1].weight)  # deep-copied from one Linear
    assert not torch.equal(pl.proj.weight, deep[0].weight)


# ---- PromptSRC --------------------------------------------------------------------------------

def test_promptsrc_loss_terms_equal_a_direct_computation(demo_root, tmp_path):
    trainer = build(demo_root, "PromptSRC", tmp_path, "TEST.NO_TEST", "True")
    batch = next(iter(trainer.train_loader_x))
    image, label = batch["img"], batch["label"]
    loss, logits, _, extra = trainer.forward_train(image, label, batch["task"])
    with torch.no_grad():
        prompts = trainer.prompt_learner.layer_prompts()
        text = trainer.encode_text_prompted(prompts)
        img = trainer.encode_image_prompted(image, prompts)
        zs_img = F.normalize(trainer.clip_model.encode_image(image), dim=-1)
        zs_text = trainer.frozen_text
        s = trainer.logit_scale
        b, c = img.shape[0], text.shape[0]
        l1_text = sum(abs(float(text[i, k] - zs_text[i, k])) for i in range(c)
                      for k in range(text.shape[1])) / text.numel() * 25.0
        l1_img = sum(abs(float(img[i, k] - zs_img[i, k])) for i in range(b)
                     for k in range(img.shape[1])) / img.numel() * 10.0
        kl = 0.0
        for i in range(b):
            p = torch.softmax(s * zs_img[i] @ zs_text.t(), 0)
            q = torch.softmax(s * img[i] @ text.t(), 0)
            kl += float((p * (p.log() - q.log())).sum())
        kl /= b * c  # upstream's normalisation: batch x classes
        ce = float(F.cross_entropy(s * img @ text.t(), label))
    # the frozen text target: mean of 60 unnormalised template features, then normalised
    names = trainer.dm.dataset.classnames
    from trainers.templates import PROMPTSRC_TEMPLATES

    assert len(PROMPTSRC_TEMPLATES) == 60 and PROMPTSRC_TEMPLATES[0] == "a photo of a {}."
    with torch.no_grad():
        raw = sum(trainer.clip_model.encode_text(tokenize([t.format(names[3])]))[0]
                  for t in PROMPTSRC_TEMPLATES)
    torch.testing.assert_close(zs_text[3], F.normalize(raw, dim=-1), rtol=0, atol=1e-5)
    assert extra["l1_text"].item() == pytest.approx(l1_text, rel=1e-5)
    assert extra["l1_image"].item() == pytest.approx(l1_img, rel=1e-5)
    assert extra["kl"].item() == pytest.approx(kl, rel=1e-4)
    assert extra["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert loss.item() == pytest.approx(ce + l1_text + l1_img + kl, rel=1e-5)


def test_gpa_weights_sum_to_one_and_peak_at_the_mean():
    w = gpa_weights(20, 15, 1)
    assert sum(w) == pytest.approx(1.0, abs=1e-12) and max(range(20), key=w.__getitem__) == 14
    far = gpa_weights(2, 30, 1)  # both epochs far from the mean: still a distribution
    assert sum(far) == pytest.approx(1.0) and far[1] > far[0] > 0


def test_gpa_aggregates_only_the_prompts(demo_root, tmp_path):
    trainer = build(demo_root, "PromptSRC", tmp_path, "OPTIM.MAX_EPOCH", "3", "TEST.NO_TEST",
                    "True", "TRAINER.PROMPTSRC.GPA_MEAN", "2.0", "TRAINER.PROMPTSRC.GPA_STD", "1.0")
    frozen = {k: v.clone() for k, v in trainer.clip_model.state_dict().items()}
    names = [n for n, p in trainer.prompt_learner.named_parameters() if p.requires_grad]
    after_epoch, snapshots = trainer.after_epoch, []

    def recorded():
        snapshots.append({n: p.detach().clone() for n, p in
                          trainer.prompt_learner.named_parameters()})
        after_epoch()

    trainer.after_epoch = recorded
    set_random_seed(1)
    trainer.train()
    w = gpa_weights(3, 2, 1)
    assert set(trainer.gpa_sum) == set(names)  # trainable prompts only
    final = dict(trainer.prompt_learner.named_parameters())
    for n in names:
        want = sum(wi * s[n].double() for wi, s in zip(w, snapshots)).float()
        torch.testing.assert_close(final[n].detach(), want, rtol=0, atol=1e-7)
        assert not torch.equal(final[n], snapshots[-1][n])
    for k, v in trainer.clip_model.state_dict().items():  # the frozen model: untouched
        assert torch.equal(v, frozen[k]), k


# ---- training, cache, resume, refusal ----------------------------------------------------------

def epoch_losses(trainer, epochs):
    losses, step = [], trainer.forward_backward

    def recorded(batch):
        out = step(batch)
        losses[-1].append(out["loss"])
        return out

    trainer.forward_backward = recorded
    for trainer.epoch in range(epochs):
        losses.append([])
        trainer.run_epoch()
    return [sum(v) / len(v) for v in losses]


@pytest.mark.parametrize("backbone", ["tiny_vit", "open_clip"])
@pytest.mark.parametrize("method", ["IVLP", "MaPLe", "PromptSRC"])
def test_learns_against_an_lr0_control(demo_root, tmp_path, method, backbone):
    opts = ["OPTIM.MAX_EPOCH", "4", "OPTIM.WARMUP_EPOCH", "0", "TEST.NO_TEST", "True",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    if backbone == "open_clip":
        opts += list(OC_TINY) + ["OPTIM.LR", "0.01"]

    def run(extra, out):
        set_random_seed(1)
        trainer = build(demo_root, method, tmp_path / out, *opts, *extra)
        return epoch_losses(trainer, 4)

    control = run(LR0, "lr0")
    trained = run((), "trained")
    print(method, backbone, assert_learned(trained, control))


def test_evaluation_runs_the_prompted_encoder_and_no_cache(demo_root, tmp_path):
    """The image encoder is prompted: the cache is never read or written, and the
    logits of evaluation are those of the prompted towers."""
    cache = tmp_path / "cache"
    out = tmp_path / "run"
    proc = run_train("--root", demo_root, "--seed", "1", "--trainer", "IVLP",
                     "--dataset-config-file", "configs/datasets/demo_digit.yaml",
                     "--config-file", CONFIGS["IVLP"], "--output-dir", out,
                     "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
                     "FEATURE_CACHE.ENABLED", "True", "FEATURE_CACHE.DIR", cache)
    assert "from the cache" not in proc.stdout and not osp.exists(cache)
    assert json.load(open(out / "results.json"))["overall"] > 10.0
    trainer = build(demo_root, "IVLP", tmp_path / "inproc", "FEATURE_CACHE.ENABLED", "True",
                    "FEATURE_CACHE.DIR", str(cache))
    with torch.no_grad():  # make the vision prompts matter
        for p in trainer.prompt_learner.vision:
            p.normal_(0, 1.0)
    image = next(iter(trainer.test_loader))["img"][:4]
    logits = trainer.model_inference(image)
    prompts = trainer.prompt_learner.layer_prompts()
    want = trainer.logit_scale * trainer.encode_image_prompted(image, prompts) @ \
        trainer.encode_text_prompted(prompts).t()
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-5)
    frozen = trainer.logit_scale * trainer.encode_image(image) @ trainer.encode_text_prompted(
        prompts).t()
    assert (logits - frozen).abs().max() > 1e-3
    assert trainer._feature_loader(trainer.test_loader, "test") is None
    from toolbox.engine import TRAINER_REGISTRY
    from toolbox.methods import image_encoder_of

    for name in CONFIGS:  # the declared contract: prompted in training and evaluation
        contract = image_encoder_of(TRAINER_REGISTRY.get(name))
        assert not contract.frozen("train") and not contract.frozen("eval"), name


def test_resume_is_exact_with_the_gpa_sum(demo_root, tmp_path):
    opts = ("OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.CHECKPOINT_KEEP", "0",
            "TEST.NO_TEST", "True", "TRAINER.PROMPTSRC.GPA_MEAN", "2.0")

    def run(out):
        set_random_seed(1)
        trainer = build(demo_root, "PromptSRC", out, *opts)
        trainer.train()
        return trainer

    full = run(tmp_path / "full")
    ckpt = torch.load(tmp_path / "full" / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    assert set(ckpt["training_state"]["gpa_sum"]) == set(full.gpa_sum)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut" / "prompt_learner" / "checkpoint").write_text("model.pth.tar-2\n")
    resumed = run(tmp_path / "cut")
    assert resumed.start_epoch == 2
    a, b = full.prompt_learner.state_dict(), resumed.prompt_learner.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(full.gpa_sum[k], resumed.gpa_sum[k]) for k in full.gpa_sum)


@pytest.mark.parametrize("trainer", ["IVLP", "MaPLe", "PromptSRC"])
def test_resnet_backbone_is_one_error_line(demo_root, tmp_path, trainer):
    proc = run_train("--root", demo_root, "--trainer", trainer,
                     "--dataset-config-file", "configs/datasets/demo_digit.yaml",
                     "--config-file", CONFIGS[trainer], "--output-dir", tmp_path / "o",
                     "MODEL.BACKBONE.NAME", "tiny_rn", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert trainer in lines[0] and "tiny_rn" in lines[0] and "vit_b16" in lines[0]


def test_depth_beyond_the_layers_is_refused(demo_root, tmp_path):
    with pytest.raises(UserError, match="depth of 9 does not fit the backbone's 2"):
        build(demo_root, "MaPLe", tmp_path, "TRAINER.MAPLE.PROMPT_DEPTH", "9")


def test_activation_checkpointing_gives_the_same_gradients(demo_root, tmp_path, monkeypatch):
    """GRAD_CHECKPOINT recomputes the image tower in backward: same loss, same gradients."""
    import trainers.prompted_towers as towers

    calls, original = [], towers.grad_checkpoint
    monkeypatch.setattr(towers, "grad_checkpoint", lambda *a, **k: calls.append(1) or
                        original(*a, **k))
    grads = []
    for ckpt in ("False", "True"):
        set_random_seed(1)  # same prompts, same batch
        trainer = build(demo_root, "MaPLe", tmp_path / ckpt, "TRAINER.MAPLE.GRAD_CHECKPOINT", ckpt)
        trainer.set_model_mode("train")
        batch = next(iter(trainer.train_loader_x))
        trainer.model_zero_grad()
        loss = trainer.forward_train(batch["img"], batch["label"], batch["task"])[0]
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in trainer.prompt_learner.named_parameters()})
    assert len(calls) == 2  # the two image blocks, only in the checkpointed run
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.parametrize("prec", ["fp16", "bf16"])
def test_cuda_amp_keeps_fp32_prompts(demo_root, tmp_path, prec):
    """On CUDA: autocast (fp16 with a GradScaler, or bf16), prompts stay fp32 and learn."""
    trainer = build(demo_root, "PromptSRC", tmp_path, "TRAINER.PROMPTSRC.PREC", prec,
                    "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True", "USE_CUDA", "True")
    assert (trainer.scaler is not None) == (prec == "fp16")
    before = {n: p.detach().clone() for n, p in trainer.prompt_learner.named_parameters()}
    trainer.train()
    for n, p in trainer.prompt_learner.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
        assert not torch.equal(p.detach(), before[n]), n
