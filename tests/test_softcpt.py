"""SoftCPT: variant table, meta-network sizes, the loss against a direct
computation, batch-task encoding, learning on the demo, task-grouped batches."""
import math
import re
import tempfile

import pytest
import torch
import torch.nn.functional as F
from clip.model import CLIP

from tests.conftest import make_cfg
from tests.controls import epoch_losses
from tests.test_clip_model import native_encode
from toolbox.data.tasks import TaskInfo
from toolbox.engine import build_trainer
from toolbox.utils import set_random_seed
from trainers.clip_model import tokenize
from trainers.softcpt import (VARIANT_KEYS, VARIANTS, SoftPromptLearner, resolve_variant,
                              task_text)

import datasets  # noqa: F401
import trainers  # noqa: F401

CONFIG = "configs/trainers/SoftCPT/tiny_vit_ep10.yaml"


def build(root, *opts, shots=2):
    # a fresh output folder: training resumes from any checkpoint it finds
    out = tempfile.mkdtemp(prefix="softcpt-", dir=root)
    cfg = make_cfg(root, "configs/datasets/demo.yaml", CONFIG,
                   ["--trainer", "SoftCPT", "--output-dir", out,
                    "--seed", "1", "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False",
                    "TEST.NO_TEST", "True", *opts])
    set_random_seed(cfg.SEED)  # as train.py does: batch order independent of test order
    return build_trainer(cfg)


# The variant table exactly as REFERENCE.md states it (CATA/CSTA/CATS/CSTS
# share one row whose F|T entries the variant's letters decide).
REFERENCE_TABLE = ("NATA `0 F 4 F 16 F`, NATS `0 F 4 T 16 F`, "
                   "CATA/CSTA/CATS/CSTS `4 F|T 4 F|T 16 T`")


def reference_table():
    return dict(re.findall(r"(\w+(?:/\w+)*) `([^`]+)`", REFERENCE_TABLE))


def test_variants_match_reference_and_letters():
    rows = reference_table()
    flag = {"F": False, "T": True}
    for names, spec in rows.items():
        for name in names.split("/"):
            got = VARIANTS[name]
            for value, want in zip(got, spec.split()):
                if "|" in want:  # F|T: chosen by the variant's letters below
                    assert isinstance(value, bool)
                elif want in flag:
                    assert value is flag[want], (name, got)
                else:
                    assert value == int(want), (name, got)
    assert set(VARIANTS) == {"NATA", "NATS", "CATA", "CSTA", "CATS", "CSTS"}
    for name, values in VARIANTS.items():
        s = dict(zip(VARIANT_KEYS, values))
        assert s["CLASS_CSC"] == (name[:2] == "CS")  # class-specific class context
        assert s["TASK_CSC"] == (name[2:] == "TS")  # one task context per task
        assert (s["CLASS_N_CTX"] > 0) == (name[:2] != "NA")
        assert s["CSC"] == (name[:2] != "NA")  # class-aware: one context per class


def test_variant_key_sets_settings_and_empty_variant_uses_keys(demo_root):
    cfg = make_cfg(demo_root, None, CONFIG, ["TRAINER.SOFTCPT.VARIANT", "CSTS"])
    assert resolve_variant(cfg.TRAINER.SOFTCPT) == dict(zip(VARIANT_KEYS, VARIANTS["CSTS"]))
    cfg = make_cfg(demo_root, None, CONFIG, ["TRAINER.SOFTCPT.VARIANT", "",
                                             "TRAINER.SOFTCPT.TASK_N_CTX", "7"])
    assert resolve_variant(cfg.TRAINER.SOFTCPT)["TASK_N_CTX"] == 7


def test_task_text():
    assert task_text(TaskInfo("OxfordPets", ["a"]), "name") == "oxford pets"
    assert task_text(TaskInfo("FGVCAircraft", ["a"]), "name") == "fgvc aircraft"
    assert task_text(TaskInfo("pants_type", ["a"]), "name") == "pants type"
    assert task_text(TaskInfo("X", ["a"], description="which pet it is."),
                     "description") == "which pet it is"


@pytest.fixture(scope="module")
def rn50_text_clip():
    """RN50's text sizes (ctx_dim 512, embed 1024) with a one-layer text
    transformer and a minimal image tower: enough to build the prompt learner."""
    torch.manual_seed(0)
    return CLIP(embed_dim=1024, image_resolution=32, vision_layers=(1, 1, 1, 1),
                vision_width=8, vision_patch_size=None, context_length=77, vocab_size=49408,
                transformer_width=512, transformer_heads=8, transformer_layers=1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_meta_network_and_context_sizes_at_rn50(rn50_text_clip, variant):
    tasks = [TaskInfo("TaskA", ["a", "b", "c"], offset=0),
             TaskInfo("TaskB", ["d", "e"], offset=3)]
    s = dict(zip(VARIANT_KEYS, VARIANTS[variant]))
    learner = SoftPromptLearner(s, "linear", tasks, rn50_text_clip)
    embed, ctx_dim, n_ctx, n_tasks, n_cls = 1024, 512, 16, 2, 5
    class_aware = variant[:2] != "NA"
    meta = (2 * embed if class_aware else embed) * n_ctx * ctx_dim  # bias-free linear
    assert sum(p.numel() for p in learner.meta_net.parameters()) == meta
    assert learner.meta_net.bias is None
    assert abs(learner.meta_net.weight.std().item() - 0.02) < 0.001
    task_ctx = 4 * ctx_dim * (n_tasks if variant[2:] == "TS" else 1)
    class_ctx = 0 if not class_aware else 4 * ctx_dim * (n_cls if variant[:2] == "CS" else 1)
    trainable = sum(p.numel() for p in learner.parameters() if p.requires_grad)
    assert trainable == meta + task_ctx + class_ctx
    assert meta in (8_388_608, 16_777_216)


def direct_loss(trainer, image, label, task):
    """SoftCPT's loss rebuilt from CLIP's own modules, prompt by prompt."""
    m, pl = trainer.clip_model, trainer.prompt_learner
    n_task_ctx, n_ctx = pl.task_prompts.n_ctx, pl.n_ctx

    def encode(text, slots):
        tok = tokenize([text])
        emb = m.token_embedding(tok).clone()
        for start, vec in slots:
            emb[0, start:start + vec.shape[0]] = vec
        return native_encode(m, emb, tok)[0]

    img = F.normalize(m.encode_image(image), dim=-1)
    losses = []
    for i in range(image.size(0)):
        t = trainer.tasks[int(task[i])]
        tctx = pl.task_ctx if pl.task_ctx.dim() == 2 else pl.task_ctx[int(task[i])]
        f_task = encode(" ".join(["X"] * n_task_ctx) + " " + task_text(t, "name") + ".",
                        [(1, tctx)])
        feats = []
        for j, name in enumerate(t.classnames):
            c = t.offset + j
            if pl.class_aware:
                cctx = pl.class_ctx if pl.class_ctx.dim() == 2 else pl.class_ctx[c]
                f_cls = encode(" ".join(["X"] * cctx.shape[0]) + " " + name + ".", [(1, cctx)])
                ctx = pl.meta_net(torch.cat([f_cls, f_task])).view(n_ctx, -1)
            else:
                ctx = pl.meta_net(f_task).view(n_ctx, -1)
            ctx = ctx + pl.ctx_base
            feats.append(encode("a photo of the digit " + name + ".", [(1, ctx)]))
        logits = trainer.logit_scale * img[i] @ F.normalize(torch.stack(feats), dim=-1).t()
        losses.append(F.cross_entropy(logits.unsqueeze(0), (label[i] - t.offset).view(1)))
    return torch.stack(losses).mean()


def mixed_batch(trainer, tasks=(0, 2), per_task=3):
    """Images, labels and task ids of a batch holding only ``tasks``."""
    ds = trainer.train_loader_x.dataset
    idx = [i for t in tasks for i in [k for k, d in enumerate(ds.data_source)
                                      if d.task == t][:per_task]]
    items = [ds[i] for i in idx]
    return (torch.stack([x["img"] for x in items]), torch.tensor([x["label"] for x in items]),
            torch.tensor([x["task"] for x in items]))


@pytest.mark.parametrize("variant", ["NATA", "CSTS"])
def test_loss_equals_direct_computation(demo_root, variant):
    trainer = build(demo_root, "TRAINER.SOFTCPT.VARIANT", variant)
    pl = trainer.prompt_learner
    with torch.no_grad():  # move off the initialisation so every part matters
        for p in pl.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    image, label, task = mixed_batch(trainer)
    with torch.no_grad():
        loss = trainer.forward_train(image, label, task)[0]
        want = direct_loss(trainer, image, label, task)
    assert torch.allclose(loss, want, atol=1e-4), (loss.item(), want.item())


@pytest.mark.parametrize("variant", ["NATS", "CATA", "CSTS"])
def test_batch_tasks_only_gives_same_loss_and_gradients_as_all_tasks(demo_root, variant):
    # no CTX_INIT: the meta network starts random, so gradients reach the task context
    trainer = build(demo_root, "TRAINER.SOFTCPT.VARIANT", variant, "TRAINER.SOFTCPT.CTX_INIT", "")
    image, label, task = mixed_batch(trainer, tasks=(0, 2))
    assert trainer.batch_classes(task).numel() < trainer.num_classes  # DemoParity left out

    def loss_and_grads(classes):
        trainer.model_zero_grad()
        loss = trainer.forward_train(image, label, task, classes=classes)[0]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in
                               trainer.prompt_learner.named_parameters() if p.grad is not None}

    loss_b, grads_b = loss_and_grads(None)
    loss_a, grads_a = loss_and_grads(torch.arange(trainer.num_classes))
    assert torch.allclose(loss_b, loss_a, atol=1e-6)
    assert set(grads_a) == {n for n, _ in trainer.prompt_learner.named_parameters()}
    for name, g in grads_a.items():
        gb = grads_b.get(name, torch.zeros_like(g))
        # equal up to float summation order (prompt batches of different sizes)
        assert torch.allclose(gb, g, atol=1e-4 * g.abs().max().item(), rtol=0), name
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_learns_on_demo(demo_root, variant):
    # the demo config's schedule (10 epochs) against a control: the same run
    # at learning rate 0, whose epoch loss is the starting loss
    opts = ("TRAINER.SOFTCPT.VARIANT", variant, "TRAIN.PRINT_FREQ", "1000")
    control = epoch_losses(build(demo_root, *opts, "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.0",
                                 "OPTIM.WARMUP_CONS_LR", "0.0", shots=4))[0]
    trainer = build(demo_root, *opts, shots=4)
    before = {n: p.detach().clone() for n, p in trainer.prompt_learner.named_parameters()}
    losses = epoch_losses(trainer)
    assert len(losses) == trainer.cfg.OPTIM.MAX_EPOCH == 10
    assert losses[-1] < control, (losses, control)
    print(f"{variant}: last-epoch loss {losses[-1]:.4f}, starting loss (lr 0) {control:.4f}")
    for n, p in trainer.prompt_learner.named_parameters():
        assert not torch.equal(p, before[n]), f"{n} did not change"


def test_task_grouped_batches_encode_one_task(demo_root):
    trainer = build(demo_root, "DATALOADER.TRAIN_X.SAMPLER", "TaskGroupedBatchSampler",
                    "OPTIM.MAX_EPOCH", "1", "TRAIN.PRINT_FREQ", "1000")
    encoded = []
    text_features = trainer.text_features

    def spy(classes):
        encoded.append(classes.clone())
        return text_features(classes)

    trainer.text_features = spy
    seen = 0
    for batch in trainer.train_loader_x:
        assert batch["task"].unique().numel() == 1
        seen += batch["task"].numel()
    assert seen == len(trainer.dm.dataset.train_x)
    trainer.train()
    assert len(encoded) == len(trainer.train_loader_x)
    for classes in encoded:  # only the batch's task's classes were encoded
        owners = trainer.owner[classes].unique()
        assert owners.numel() == 1
        start, end = trainer.tasks[int(owners)].label_range
        assert classes.tolist() == list(range(start, end))


def test_class_sampling_keeps_labels_and_a_fraction_of_negatives(demo_root):
    trainer = build(demo_root, "TRAINER.SOFTCPT.VARIANT", "CATA",
                    "TRAINER.SOFTCPT.CLS_SAMPLE_RATE", "0.5")
    image, label, task = mixed_batch(trainer, tasks=(0,), per_task=3)
    classes = trainer.batch_classes(task)  # DemoDigit's 10 classes
    picked = trainer.sample_classes(classes, label)
    n_pos = label.unique().numel()
    assert set(label.tolist()) <= set(picked.tolist()) <= set(classes.tolist())
    assert picked.numel() == n_pos + math.ceil(0.5 * (10 - n_pos))
    assert torch.equal(picked, picked.sort().values)
    loss, logits, target, _ = trainer.forward_train(image, label, task)
    assert logits.shape[1] == picked.numel() and torch.isfinite(loss)


def test_class_sampling_is_per_task_ceil_and_keeps_a_negative_for_small_tasks(demo_root):
    # upstream: ceil(rate x negatives) of every task; a pooled round() gave one
    # task all the sampled negatives and the small task none
    trainer = build(demo_root, "TRAINER.SOFTCPT.VARIANT", "CATA",
                    "TRAINER.SOFTCPT.CLS_SAMPLE_RATE", "0.1")
    assert [t.num_classes for t in trainer.tasks] == [10, 2, 2]
    label = torch.tensor([3, 12])  # DemoDigit "three", DemoMagnitude "small number"
    task = torch.tensor([0, 2])
    classes = trainer.batch_classes(task)
    for _ in range(20):
        picked = trainer.sample_classes(classes, label)
        owner = trainer.owner[picked]
        assert {3, 12} <= set(picked.tolist())
        assert (owner == 0).sum() == 1 + math.ceil(0.1 * 9)  # the label + 1 of 9 negatives
        assert picked[owner == 2].tolist() == [12, 13]  # its only negative is always kept
        assert (owner == 1).sum() == 0  # DemoParity is not in the batch
    # 0.3 x 10 negatives is 3, not ceil(3.0000000000000004) = 4
    trainer.cfg.defrost()
    trainer.cfg.TRAINER.SOFTCPT.CLS_SAMPLE_RATE = 0.3
    label = torch.tensor([12])
    picked = trainer.sample_classes(trainer.batch_classes(torch.tensor([0, 2])), label)
    assert (trainer.owner[picked] == 0).sum() == 3


def hand_class_aware_logits(trainer, images):
    """Class-aware SoftCPT logits over every class, computed as upstream does
    from the tiny CLIP's token embedding, CLIP's own transformer and the meta
    network's weight matrix (no code of trainers/softcpt.py):
    task feature of "X X X X <task>.", class feature of "X X X X <class>.",
    context = W [f_class, f_task] reshaped (N_CTX, d), class prompt
    "X*N_CTX <class>."; logits = scale * cos(image, class feature)."""
    m, pl = trainer.clip_model, trainer.prompt_learner
    weight = pl.meta_net.weight  # (N_CTX * d, 2 * embed), bias-free
    n_ctx, width = 16, m.ln_final.weight.shape[0]

    def encode(text, ctx):
        tok = tokenize([text])
        emb = m.token_embedding(tok).clone()
        emb[0, 1:1 + ctx.shape[0]] = ctx
        return native_encode(m, emb, tok)[0]

    feats = []
    for t_idx, t in enumerate(trainer.tasks):
        tctx = pl.task_ctx if pl.task_ctx.dim() == 2 else pl.task_ctx[t_idx]
        words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", t.name).lower()  # DemoDigit -> demo digit
        f_task = encode("X X X X " + words + ".", tctx)
        for j, name in enumerate(t.classnames):
            c = t.offset + j
            cctx = pl.class_ctx if pl.class_ctx.dim() == 2 else pl.class_ctx[c]
            f_cls = encode("X X X X " + name + ".", cctx)
            ctx = (weight @ torch.cat([f_cls, f_task])).view(n_ctx, width)
            feats.append(encode(" ".join(["X"] * n_ctx) + " " + name + ".", ctx))
    text = F.normalize(torch.stack(feats), dim=-1)
    img = F.normalize(m.encode_image(images), dim=-1)
    return m.logit_scale.exp() * img @ text.t()


@pytest.mark.parametrize("variant", ["CATA", "CSTA", "CATS", "CSTS"])
def test_class_aware_logits_equal_an_upstream_style_computation(demo_root, variant):
    trainer = build(demo_root, "TRAINER.SOFTCPT.VARIANT", variant, "TRAINER.SOFTCPT.CTX_INIT", "")
    pl = trainer.prompt_learner
    with torch.no_grad():  # distinct contexts per task / class, so every index matters
        pl.task_ctx.normal_(0, 0.3)
        pl.class_ctx.normal_(0, 0.3)
    images = torch.stack([trainer.dm.test_loader.dataset[i]["img"] for i in range(6)])
    trainer.set_model_mode("eval")
    trainer._eval_text = None
    with torch.no_grad():
        got = trainer.model_inference(images)
        want = hand_class_aware_logits(trainer, images)
    assert got.shape == want.shape == (6, trainer.num_classes)
    # measured: at most 1.6e-5 apart; the old prompt without the period was 5-10 apart
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("opts,message", [
    (("TRAINER.SOFTCPT.VARIANT", "XYZ"), "TRAINER.SOFTCPT.VARIANT must be one of"),
    (("TRAINER.SOFTCPT.VARIANT", "", "TRAINER.SOFTCPT.CSC", "True"), "needs class-aware"),
    (("TRAINER.SOFTCPT.META_NET", "conv"), "TRAINER.SOFTCPT.META_NET must be one of"),
    (("TRAINER.SOFTCPT.CLS_SAMPLE_RATE", "1.5"), "CLS_SAMPLE_RATE must be in [0, 1]"),
])
def test_bad_settings_are_one_line_user_errors(demo_root, opts, message):
    from toolbox.errors import UserError

    with pytest.raises(UserError, match=re.escape(message)) as info:
        build(demo_root, *opts)
    assert "\n" not in str(info.value)


def test_mlp_meta_net_and_description_input_train(demo_root):
    trainer = build(demo_root, "TRAINER.SOFTCPT.META_NET", "mlp",
                    "TRAINER.SOFTCPT.TASK_INPUT", "description", "TRAINER.SOFTCPT.CTX_INIT", "")
    image, label, task = mixed_batch(trainer)
    before = [p.detach().clone() for p in trainer.prompt_learner.parameters()]
    trainer.optimize(trainer.forward_train(image, label, task)[0])
    after = list(trainer.prompt_learner.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, before))


def test_one_optimizer_one_step_per_batch(demo_root):
    trainer = build(demo_root, "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "1000")
    assert trainer.get_model_names() == ["prompt_learner"]
    optim = trainer._optims["prompt_learner"]
    in_optim = {id(p) for g in optim.param_groups for p in g["params"]}
    assert in_optim == {id(p) for p in trainer.prompt_learner.parameters() if p.requires_grad}
    steps = []
    optim.register_step_post_hook(lambda *args: steps.append(1))
    trainer.train()
    assert len(steps) == 2 * len(trainer.train_loader_x)
    # the cosine schedule moved once per epoch: epoch 2 of 2 ended at 0.5*LR*(1+cos(pi/2))
    lr = trainer.cfg.OPTIM.LR
    assert abs(trainer.get_current_lr() - 0.5 * lr * (1 + math.cos(math.pi / 2))) < 1e-12


@pytest.mark.parametrize("dataset,variant,env,rate,folder", [
    # upstream's README runs the class-aware variants on General-10 with rate 0.1
    ("general10", "CATA", {}, "0.1", "CATA"),
    ("general10", "CSTS", {}, "0.1", "CSTS"),
    ("general10", "NATA", {}, "0.0", "NATA"),
    ("demo", "CATA", {}, "0.0", "CATA"),
    ("general10", "CATS", {"CLS_SAMPLE_RATE": "0"}, "0.0", "CATS_csr0.0"),
    ("general10", "CATA", {"CLS_SAMPLE_RATE": "0.10"}, "0.10", "CATA"),
    ("fewshot44", "CSTA", {"CLS_SAMPLE_RATE": ".25"}, ".25", "CSTA_csr.25"),
])
def test_script_class_sampling_rate(tmp_path, dataset, variant, env, rate, folder):
    import os
    import subprocess

    from tests.conftest import ROOT

    # DRY_RUN=1: tools/grid.py prints the train.py command instead of running it
    proc = subprocess.run(["bash", f"{ROOT}/scripts/softcpt/main.sh", dataset, "16", "rn50",
                           variant], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DRY_RUN": "1", "SEEDS": "1", **env})
    assert proc.returncode == 0, proc.stderr
    import shlex
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[run] ")]
    assert len(lines) == 1, proc.stdout
    argv = shlex.split(lines[0][len("[run] "):])
    assert argv[argv.index("TRAINER.SOFTCPT.CLS_SAMPLE_RATE") + 1] == rate
    assert argv[argv.index("TRAINER.SOFTCPT.VARIANT") + 1] == variant
    out = argv[argv.index("--output-dir") + 1]
    assert out == f"output/{dataset}/SoftCPT/rn50_ep50_16shots/{folder}/seed1"


@pytest.mark.parametrize("rate", ["x", "1.5", "-0.1"])
def test_script_rejects_a_bad_class_sampling_rate(tmp_path, rate):
    import os
    import subprocess

    from tests.conftest import ROOT

    # checked by the method's declaration (trainers/softcpt.py) before the grid plans a run
    proc = subprocess.run(["bash", f"{ROOT}/scripts/softcpt/main.sh", "general10", "16", "rn50",
                           "CATA"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CLS_SAMPLE_RATE": rate})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: CLS_SAMPLE_RATE must be a number in [0, 1]")
    assert not (tmp_path / "output").exists()
