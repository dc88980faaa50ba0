"""ProGrad: the projected gradient against a hand computation, the teacher
against ZS-CLIP, the template initialisation, learning against an LR-0 control."""
import tempfile

import numpy as np
import pytest
import torch

from tests.conftest import make_cfg
from tests.controls import LR0, assert_learned, epoch_losses
from toolbox.engine import build_trainer
from toolbox.utils import set_random_seed
from trainers.prograd import prograd_projection, soft_cross_entropy

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)

DEMO = "configs/datasets/demo.yaml"


def build(root, trainer="ProGrad", *opts, shots=2, backbone="tiny_rn"):
    out = tempfile.mkdtemp(prefix=f"{trainer}-", dir=root)
    config = {"ProGrad": f"configs/trainers/ProGrad/{backbone}_ep10.yaml",
              "ZeroshotCLIP": f"configs/trainers/ZeroshotCLIP/{backbone}.yaml"}[trainer]
    cfg = make_cfg(root, DEMO, config,
                   ["--trainer", trainer, "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "TRAIN.PRINT_FREQ", "1000", *opts])
    set_random_seed(1)
    return build_trainer(cfg)


def hand_projection(g_ce, g_kl, lam):
    a, b = np.asarray(g_ce, np.float64).ravel(), np.asarray(g_kl, np.float64).ravel()
    if a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) < 0:
        return a - lam * (a @ b) / (b @ b) * b
    return a


def test_projection_of_a_conflicting_and_an_agreeing_pair():
    g_ce = torch.tensor([1.0, 0.0])
    # conflicting (cos < 0): the CE gradient loses its component along the KL gradient
    out = prograd_projection(g_ce, torch.tensor([-1.0, 1.0]), 1.0)
    assert torch.allclose(out, torch.tensor([0.5, 0.5]))
    assert abs(float(out @ torch.tensor([-1.0, 1.0]))) < 1e-7  # orthogonal to g_kl at lambda 1
    out = prograd_projection(g_ce, torch.tensor([-1.0, 1.0]), 0.8)
    assert torch.allclose(out, torch.tensor([0.6, 0.4]))  # 1 - 0.8*0.5, 0.8*0.5
    # agreeing (cos > 0): unchanged; the KL gradient is never added
    assert torch.equal(prograd_projection(g_ce, torch.tensor([1.0, 1.0]), 1.0), g_ce)


@pytest.mark.parametrize("lam,teacher", [(1.0, "conflict"), (0.8, "conflict"), (1.0, "agree")])
def test_trainer_steps_on_the_projected_gradient(demo_root, lam, teacher):
    """One real step: the gradient the optimizer sees equals the hand projection of
    the separately computed CE and KL gradients; one optimizer step per batch. The
    real teacher agrees with the labels here; a teacher that is the student with
    every label's logit lowered by 5 pulls against them (a conflicting pair)."""
    trainer = build(demo_root, "ProGrad", "TRAINER.PROGRAD.LAMBDA", str(lam))
    batch = next(iter(trainer.train_loader_x))
    image, label, task = trainer.parse_batch_train(batch)
    if teacher == "conflict":
        def against_labels(feats, classes):
            with torch.no_grad():
                s = trainer.logit_scale * feats @ trainer.text_features(classes).t()
            target = torch.searchsorted(classes, label)  # the label's column
            return s - 5.0 * torch.nn.functional.one_hot(target, s.shape[1])

        trainer.teacher_logits = against_labels
    ctx = trainer.prompt_learner.ctx
    with torch.no_grad():
        ctx.add_(torch.randn_like(ctx) * 0.05)  # off the initial point (zeros in front)
    ce, _, _, extra = trainer.forward_train(image, label, task)
    g_ce, g_kl = torch.autograd.grad([ce], [ctx], retain_graph=True)[0], \
        torch.autograd.grad([extra["kl"]], [ctx])[0]
    want = hand_projection(g_ce, g_kl, lam)
    seen = []
    optim = trainer._optims["prompt_learner"]
    real_step = optim.step
    optim.step = lambda *a, **k: (seen.append(ctx.grad.detach().clone()), real_step(*a, **k))[1]
    trainer.batch_idx, trainer.num_batches = 0, 2
    trainer.forward_backward(batch)
    assert len(seen) == 1
    got = seen[0].double().numpy().ravel()
    dot = float(g_ce.ravel() @ g_kl.ravel())
    assert (dot < 0) == (teacher == "conflict"), dot
    if teacher == "agree":
        assert torch.equal(seen[0], g_ce)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_teacher_logits_equal_zero_shot_clip(demo_root):
    zs = build(demo_root, "ZeroshotCLIP", "TRAINER.ZSCLIP.TEMPLATES", "task")
    pg = build(demo_root, "ProGrad")
    batch = next(iter(zs.test_loader))
    image = batch["img"][:16]
    want = zs.model_inference(image)
    classes = torch.arange(pg.num_classes)
    got = pg.teacher_logits(pg.encode_image(image), classes)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_context_starts_from_the_template_with_zero_leading_slots(demo_root):
    trainer = build(demo_root, "ProGrad", "TRAINER.PROGRAD.N_CTX", "8",
                    "TRAINER.PROGRAD.CTX_INIT", "a photo of the digit")
    ctx = trainer.prompt_learner.ctx.detach()
    words = "a photo of the digit".split()  # 5 of 8 slots
    assert torch.equal(ctx[:3], torch.zeros_like(ctx[:3]))
    emb = trainer.clip_model.token_embedding.weight
    from trainers.clip_model import tokenize
    ids = tokenize(["a photo of the digit"])[0, 1:1 + len(words)]
    assert torch.allclose(ctx[3:], emb[ids].float())


def test_soft_cross_entropy_ignores_other_tasks_classes():
    student = torch.tensor([[1.0, 2.0, float("-inf")]])
    teacher = torch.tensor([[0.5, 0.0, float("-inf")]])
    p = torch.softmax(teacher[:, :2] / 2, -1)
    want = -(p * torch.log_softmax(student[:, :2] / 2, -1)).sum() * 4
    assert torch.allclose(soft_cross_entropy(student, teacher, 2.0), want)


def test_prograd_learns_on_demo_against_lr0_control(demo_root):
    opts = ("OPTIM.MAX_EPOCH", "4")
    control = epoch_losses(build(demo_root, "ProGrad", *opts, *LR0, shots=4))
    trained = epoch_losses(build(demo_root, "ProGrad", *opts, shots=4))
    print(assert_learned(trained, control))


def test_declarations_give_upstreams_recipes_and_existing_configs():
    import os.path as osp

    from tests.conftest import ROOT
    from toolbox.methods import FROZEN_ENCODER, RunContext, get_method, image_encoder_of
    from toolbox.engine import TRAINER_REGISTRY

    def setting(method, dataset, shots, backbone="rn50", protocol="fewshot"):
        family = "tiny" if backbone.startswith("tiny") else "openai"
        m = get_method(method)
        s = m.setting(RunContext(dataset, shots, backbone, family, protocol=protocol),
                      m.parse_variant(""))
        assert osp.isfile(osp.join(ROOT, "configs", "trainers", s.trainer, s.config + ".yaml"))
        return s

    assert [setting("prograd", "eurosat", k).config for k in (1, 2, 4, 8, 16)] == \
        ["rn50_ep50", "rn50_ep100", "rn50_ep100", "rn50_ep200", "rn50_ep200"]
    assert setting("prograd", "eurosat", 16).opts == ["TRAINER.PROGRAD.LAMBDA", "0.8"]
    assert setting("prograd", "eurosat", 4).opts == ["TRAINER.PROGRAD.LAMBDA", "1.0"]
    assert setting("prograd", "caltech101", 16).opts == ["TRAINER.PROGRAD.LAMBDA", "1.0"]
    assert setting("prograd", "imagenet", 16, protocol="base2new").config == "rn50_ep100"
    assert setting("prograd", "demo", 1, "tiny_vit").config == "tiny_vit_ep10"
    assert setting("plot_coop", "rs8", 16, "vit_b16").config == "vit_b16_ep50"
    assert setting("plot_coop", "demo", 2, "tiny_rn").opts == ["TRAINER.PLOT.N", "4"]
    assert setting("protonet", "general10", 8, "tiny_rn").config == "tiny_rn"
    for name in ("prograd", "plot_coop", "protonet"):
        m = get_method(name)
        assert m.in_comparison and image_encoder_of(TRAINER_REGISTRY.get(m.trainer)) == \
            FROZEN_ENCODER


def test_loss_scaled_step_equals_the_plain_one(demo_root):
    """The amp path (a GradScaler scales both losses; upstream's amp branch is broken):
    the projection does not depend on the scale, so the step is the same as in fp32."""
    steps = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        trainer = build(demo_root, "ProGrad")
        trainer.scaler = scaler
        before = trainer.prompt_learner.ctx.detach().clone()
        batch = next(iter(trainer.train_loader_x))
        trainer.batch_idx, trainer.num_batches = 0, 2
        trainer.forward_backward(batch)
        steps.append(trainer.prompt_learner.ctx.detach() - before)
    assert steps[0].abs().max() > 0
    assert torch.allclose(steps[0], steps[1], rtol=1e-3, atol=1e-3 * steps[0].abs().max())
