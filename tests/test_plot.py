"""PLOT: Sinkhorn against a direct float64 computation and its marginals, the
stop rule independent of how often the host checks it, local features whose
token 0 is CLIP's own image feature, logits against a hand computation, the
token cache, learning against an LR-0 control."""
import tempfile

import numpy as np
import pytest
import torch

from tests.conftest import make_cfg
from tests.controls import LR0, assert_learned
from tests.test_prograd import epoch_losses
from toolbox.engine import build_trainer
from toolbox.utils import set_random_seed
from trainers.plot import sinkhorn

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)

DEMO = "configs/datasets/demo.yaml"


def build(root, *opts, backbone="tiny_vit", shots=2, trainer="PLOT"):
    out = tempfile.mkdtemp(prefix=f"{trainer}-", dir=root)
    config = f"configs/trainers/{trainer}/{backbone}_ep10.yaml"
    cfg = make_cfg(root, DEMO, config,
                   ["--trainer", trainer, "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "TRAIN.PRINT_FREQ", "1000", *opts])
    set_random_seed(1)
    return build_trainer(cfg)


def direct_sinkhorn(K, iters, thresh=None):
    """One problem at a time in float64, upstream's update order; with ``thresh``
    upstream's batch-wide stop test (mean |r - r_prev| over all problems)."""
    K = np.asarray(K, np.float64)
    P, M, N = K.shape
    r, c = np.ones((P, M)), np.ones((P, N))
    for _ in range(iters):
        r0 = r.copy()
        for p in range(P):
            r[p] = (1.0 / M) / (K[p] @ c[p])
            c[p] = (1.0 / N) / (K[p].T @ r[p])
        if thresh is not None and np.abs(r - r0).mean() < thresh:
            break
    return r[:, :, None] * K * c[:, None, :]


def kernel(P=6, M=5, N=4, eps=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(P, M, 8, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(P, N, 8, generator=g), dim=-1)
    sim = a @ b.transpose(1, 2)
    return torch.exp(-(1 - sim) / eps), sim


def test_plan_equals_direct_float64_sinkhorn_and_has_the_marginals():
    K, _ = kernel()
    plan = sinkhorn(K, max_iter=200, thresh=0.0)  # never stops early
    want = direct_sinkhorn(K.numpy(), 200)
    assert np.allclose(plan.numpy(), want, rtol=1e-4, atol=1e-7)
    M, N = K.shape[1:]
    # the last update is c's: columns sum to 1/N exactly; rows to 1/M once converged
    assert np.allclose(plan.sum(1).numpy(), 1.0 / N, atol=1e-6)
    assert np.allclose(plan.sum(2).numpy(), 1.0 / M, atol=1e-5)


def test_stop_rule_is_upstreams_whatever_the_check_interval():
    K, _ = kernel(P=12, M=7, N=4, seed=1)
    every = [sinkhorn(K, 100, 1e-2, check_every=k) for k in (1, 3, 10, 100)]
    assert all(torch.equal(every[0], p) for p in every[1:])
    want = direct_sinkhorn(K.numpy(), 100, thresh=1e-2)
    assert np.allclose(every[0].numpy(), want, rtol=1e-4, atol=1e-7)
    # an early stop really happened: the fully converged plan differs
    assert not np.allclose(want, direct_sinkhorn(K.numpy(), 100), rtol=1e-6, atol=0)


@pytest.mark.parametrize("backbone,pretrained,tokens", [
    ("tiny_rn", "", 1 + 1), ("tiny_vit", "", 1 + 16), ("open_clip:tiny-RN", "random", 1 + 4)])
def test_token_zero_is_clips_image_feature(backbone, pretrained, tokens):
    from trainers.clip_model import image_resolution, load_clip
    from trainers.local_features import image_tokens

    model = load_clip(backbone, pretrained=pretrained)
    res = image_resolution(model)
    image = torch.randn(3, 3, res, res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = image_tokens(model, image)
        want = model.encode_image(image)
    assert out.shape[:2] == (3, tokens)
    assert torch.allclose(out[:, 0], want, atol=1e-5)


def test_vit_tokens_of_openclip_are_refused_in_one_line():
    from toolbox.errors import UserError
    from trainers.clip_model import load_clip
    from trainers.local_features import check_local_features

    model = load_clip("open_clip:tiny-ViT", pretrained="random")
    with pytest.raises(UserError, match="PLOT runs on CLIP ResNets"):
        check_local_features(model, "open_clip:tiny-ViT")


@pytest.mark.parametrize("global_term", ["never", "always"])
def test_logits_equal_a_hand_computation(demo_root, global_term):
    trainer = build(demo_root, "TRAINER.PLOT.GLOBAL_TERM", global_term, "TRAINER.PLOT.THRESH",
                    "0.0", "TRAINER.PLOT.MAX_ITER", "60")
    batch = next(iter(trainer.test_loader))
    image = batch["img"][:5]
    with torch.no_grad():
        logits = trainer.model_inference(image).double().numpy()
        tokens = trainer.encode_image(image).view(5, -1, trainer.dim).double().numpy()
        text = trainer.text_features().double().numpy()  # (N, C, d)
    N, C, _ = text.shape
    scale = trainer.logit_scale
    for b in range(5):
        sim = np.einsum("md,ncd->cmn", tokens[b, 1:], text)
        plan = direct_sinkhorn(np.exp(-(1 - sim) / 0.1), 60)
        want = scale * (plan * sim).sum((1, 2))
        if global_term == "always":
            mean = text.mean(0)
            mean /= np.linalg.norm(mean, axis=-1, keepdims=True)
            want = want + scale * mean @ tokens[b, 0]
        assert np.allclose(logits[b], want, rtol=1e-4, atol=1e-4)


def test_cache_key_tells_tokens_from_pooled_features(demo_root, tmp_path):
    from trainers.clip_model import embed_dim

    plot = build(demo_root, "FEATURE_CACHE.DIR", str(tmp_path))
    coop = build(demo_root, "FEATURE_CACHE.DIR", str(tmp_path), trainer="CoOp")
    items = plot.dm.dataset.val[:6]
    a = plot.cached_features(items, "val")
    b = coop.cached_features(items, "val")
    d = embed_dim(plot.clip_model)
    assert a.shape == (6, 17 * d) and b.shape == (6, d)  # tiny_vit: 16 patches + CLS
    assert np.allclose(a.reshape(6, 17, d)[:, 0], b, atol=1e-6)
    assert plot.feature_cache.variant != coop.feature_cache.variant


def test_training_on_cached_token_views_matches_the_encoder_run(demo_root, tmp_path):
    """FEATURE_CACHE.TRAIN_VIEWS 1 with the cache off, cold and warm: the same
    trained prompts (PLOT trains without running the image encoder when warm)."""
    ctxs = []
    for tag, enabled in (("off", "False"), ("cold", "True"), ("warm", "True")):
        trainer = build(demo_root, "FEATURE_CACHE.TRAIN_VIEWS", "1", "FEATURE_CACHE.ENABLED",
                        enabled, "FEATURE_CACHE.DIR", str(tmp_path / "cache"),
                        "OPTIM.MAX_EPOCH", "1")
        if tag == "warm":
            trainer.encode_image = None  # would fail if called
        trainer.train()
        ctxs.append(trainer.prompt_learner.ctx.detach().clone())
    assert torch.equal(ctxs[0], ctxs[1]) and torch.equal(ctxs[0], ctxs[2])
    assert not torch.equal(ctxs[0], build(demo_root).prompt_learner.ctx.detach())


def test_plot_learns_on_demo_against_lr0_control(demo_root):
    # the tiny config's 10 epochs: random contexts move slower than template-initialised ones
    control = epoch_losses(build(demo_root, *LR0, shots=4))
    trained = epoch_losses(build(demo_root, shots=4))
    print(assert_learned(trained, control))
