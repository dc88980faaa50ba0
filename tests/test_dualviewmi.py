"""DualViewMI and KgCoOp: the MI estimator, the class-wise augmentation, the
losses against direct computations, base-to-new loading and training."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_cfg
from tests.test_prompt_logits import direct_prompt_features
from toolbox.engine import build_trainer
from toolbox.errors import UserError
from trainers.class_augment import ClassAugment, same_class_partners
from trainers.clip_model import tokenize
from trainers.mi_estimators import MIEstimator, infonce_mi_loss

import datasets  # noqa: F401
import trainers  # noqa: F401

DV_CFG = "configs/trainers/DualViewMI/tiny_vit_ep10.yaml"
KG_CFG = "configs/trainers/KgCoOp/tiny_vit_ep10.yaml"


def build(root, trainer, config, out, *opts, tasks="['DemoDigit']", shots="2"):
    cfg = make_cfg(root, "configs/datasets/demo.yaml", config,
                   ["--trainer", trainer, "--output-dir", str(out), "--seed", "1",
                    "DATASET.NUM_SHOTS", shots, "DATASET.TASKS", tasks, "VERBOSE", "False",
                    *opts])
    return build_trainer(cfg)


def direct_infonce(a, b, tau):
    """Written out term by term: -log softmax of the matching pair, both directions."""
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        row = [float(a[i] @ b[j]) / tau for j in range(n)]
        col = [float(a[j] @ b[i]) / tau for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


def unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


# ---- MI estimator ---------------------------------------------------------------------

def test_mi_loss_equals_direct_infonce():
    a, b = unit(6, 16, 0), unit(6, 16, 1)
    want = direct_infonce(a, b, 0.1)
    assert infonce_mi_loss(a, b, 0.1).item() == pytest.approx(want, rel=1e-5)
    assert MIEstimator("infonce", 16, 0.1)(a, b).item() == pytest.approx(want, rel=1e-5)
    # a fresh critic starts as plain cosine (its last layer is zero)
    critic = MIEstimator("critic", 16, 0.1)
    assert critic(a, b).item() == pytest.approx(want, rel=1e-5)
    with torch.no_grad():
        critic.soft_head.fc2.weight.normal_(0, 0.5)
    assert critic(a, b).item() != pytest.approx(want, rel=1e-3)
    assert sum(p.numel() for p in critic.parameters()) > 0
    assert list(MIEstimator("infonce", 16, 0.1).parameters()) == []
    with pytest.raises(UserError):
        MIEstimator("mine", 16, 0.1)


def test_mi_direction_and_critic_width():
    """MI_DIRECTION: one direction of the InfoNCE, or the mean of both;
    MI_CRITIC_HIDDEN: the width of each critic head."""
    a, b = unit(5, 16, 0), unit(5, 16, 1)
    tau = 0.1

    def one_way(x, y):  # each row of x picks its class among the rows of y
        total = 0.0
        for i in range(5):
            row = [float(x[i] @ y[j]) / tau for j in range(5)]
            total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        return total / 5

    forward, backward = one_way(a, b), one_way(b, a)
    assert forward != pytest.approx(backward, rel=1e-3)
    assert infonce_mi_loss(a, b, tau, "a_to_b").item() == pytest.approx(forward, rel=1e-5)
    assert infonce_mi_loss(a, b, tau, "b_to_a").item() == pytest.approx(backward, rel=1e-5)
    assert infonce_mi_loss(a, b, tau).item() == pytest.approx((forward + backward) / 2, rel=1e-5)
    assert MIEstimator("infonce", 16, tau, "b_to_a")(a, b).item() == pytest.approx(backward,
                                                                                  rel=1e-5)
    head = 16 * 5 + 5 + 5 * 16 + 16  # fc1 and fc2 with biases, hidden width 5
    assert sum(p.numel() for p in MIEstimator("critic", 16, tau, hidden=5).parameters()) \
        == 2 * head
    with pytest.raises(UserError):
        MIEstimator("infonce", 16, tau, "sideways")


def test_mi_loss_is_lowest_when_views_agree_class_by_class():
    hand = unit(8, 32, 2)
    agree = infonce_mi_loss(hand, hand, 0.07).item()
    shuffled = infonce_mi_loss(hand[torch.roll(torch.arange(8), 1)], hand, 0.07).item()
    unrelated = infonce_mi_loss(unit(8, 32, 3), hand, 0.07).item()
    noisy = infonce_mi_loss(F.normalize(hand + 0.3 * unit(8, 32, 4), dim=-1), hand, 0.07).item()
    assert agree < noisy < unrelated < shuffled, (agree, noisy, unrelated, shuffled)
    assert agree < 0.05 and shuffled > math.log(8)


# ---- class-wise augmentation ----------------------------------------------------------

def support(rows):
    return [set(torch.nonzero(r.abs() > 1e-6).view(-1).tolist()) for r in rows]


@pytest.mark.parametrize("mode", ["mixup", "prototype"])
def test_augmentation_mixes_only_same_class_features(mode):
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])  # class 3 has a single sample
    feats = torch.eye(8)  # sample i lives on axis i: the support of a mix names its sources
    aug = ClassAugment(mode, 4, 8, alpha=1.0, partners="batch").train()
    mixed_any = False
    for step in range(5):
        out, partnered = aug(feats, labels)
        # mixup: a partner in the batch; prototype: also a class seen in an earlier batch
        alone = [6] if (mode == "mixup" or step == 0) else []
        assert [i for i in range(8) if not partnered[i]] == alone
        assert torch.allclose(out.norm(dim=-1), torch.ones(8), atol=1e-5)
        for i, sources in enumerate(support(out)):
            assert i in sources
            assert all(labels[j] == labels[i] for j in sources), (i, sources)
            mixed_any |= len(sources) > 1
        assert torch.allclose(out[6], feats[6], atol=1e-6)  # alone in its class
    assert mixed_any
    if mode == "prototype":  # running means of everything seen, per class
        assert torch.allclose(aug.prototypes[0], feats[[0, 2, 5]].mean(0), atol=1e-6)
        assert aug.counts.tolist() == [15, 10, 10, 5]
    # evaluation: off, the features pass through untouched
    aug.eval()
    assert not aug.active and aug(feats, labels)[0] is feats
    assert not aug(feats, labels)[1].any()
    assert not ClassAugment("none", 4, 8, 1.0).train().active


@pytest.mark.parametrize("mode", ["mixup", "prototype"])
def test_memory_partners_are_other_training_images_of_the_class(mode):
    torch.manual_seed(0)
    labels = torch.tensor([2, 0, 1, 0, 2, 0, 3, 2, 2])  # class 3: one training image
    aug = ClassAugment(mode, 4, 9, alpha=1.0).train()  # partners from the memory (default)
    assert aug.needs_memory
    aug.fill_memory(torch.eye(9), labels)  # item i lives on axis i
    assert not aug.needs_memory
    index = torch.tensor([0, 3, 6, 7, 1, 2])  # a batch of training items, each class once or so
    feats = torch.eye(9)[index]
    used = set()
    for _ in range(30):
        out, partnered = aug(feats, labels[index], index)
        assert partnered.tolist() == [True, True, False, True, True, False]  # 3 and 1 alone
        for k, sources in enumerate(support(out)):
            i = int(index[k])
            assert i in sources and all(labels[j] == labels[i] for j in sources), (i, sources)
            if partnered[k]:
                assert len(sources) > 1  # never mixed with itself only
                used |= {(i, j) for j in sources if j != i}
            else:
                assert sources == {i}
        if mode == "prototype":  # the mean of the class's other images
            assert support(out[:1])[0] == {0, 4, 7, 8}
    if mode == "mixup":  # every other image of the class is drawn
        assert {j for i, j in used if i == 0} == {4, 7, 8}
    with pytest.raises(ValueError, match="indices do not match"):
        aug(feats, labels[index], index + 1)


def partner_fraction(aug, feats, labels, batch_size, epochs=2, seed=0):
    """Fraction of samples given a same-class partner over shuffled epochs."""
    g = torch.Generator().manual_seed(seed)
    partnered = total = 0
    for _ in range(epochs):
        order = torch.randperm(labels.numel(), generator=g)
        for start in range(0, labels.numel(), batch_size):
            index = order[start:start + batch_size]
            _, p = aug(feats[index], labels[index], index)
            partnered += int(p.sum())
            total += index.numel()
    return partnered / total


@pytest.mark.parametrize("mode", ["mixup", "prototype"])
def test_memory_finds_partners_at_batch_4_on_a_50_class_16_shot_split(mode):
    """The paper's setting (batch 4, 16 shots, a base split of 50+ classes):
    partners from the batch are rare; the memory finds one for every sample."""
    torch.manual_seed(0)
    n_cls, shots = 60, 16
    labels = torch.arange(n_cls).repeat_interleave(shots)
    feats = F.normalize(torch.randn(n_cls, 64).repeat_interleave(shots, 0)
                        + 0.5 * torch.randn(n_cls * shots, 64), dim=-1)
    memory = ClassAugment(mode, n_cls, 64, 1.0, partners="memory").train()
    memory.fill_memory(feats, labels)
    batch = ClassAugment("mixup", n_cls, 64, 1.0, partners="batch").train()
    got = partner_fraction(memory, feats, labels, 4)
    control = partner_fraction(batch, feats, labels, 4)
    assert got >= 0.99, got
    assert control < 0.2, control  # about 3 in 59 at batch 4
    # the mixed features stay in their class: closer to its mean than to any other
    index = torch.arange(0, n_cls * shots, shots)
    out, _ = memory(feats[index], labels[index], index)
    means = F.normalize(feats.view(n_cls, shots, -1).mean(1), dim=-1)
    assert torch.equal((out @ means.t()).argmax(1), labels[index])


def test_partners_are_other_samples_of_the_same_class():
    torch.manual_seed(1)
    labels = torch.tensor([3, 3, 1, 3, 2, 1])
    for _ in range(10):
        p = same_class_partners(labels)
        assert torch.equal(labels[p], labels)
        assert p[4] == 4 and all(p[i] != i for i in (0, 1, 2, 3, 5))


# ---- trainers: losses, base-to-new, training -------------------------------------------

def mixed_task_batch(trainer, want_tasks=(0, 2), per_task=3):
    items = [d for d in trainer.dm.dataset.train_x if d.task in want_tasks]
    picked = []
    for t in want_tasks:
        picked += [d for d in items if d.task == t][:per_task]
    wrapper = trainer.train_loader_x.dataset
    index = {d.impath + str(d.task): i for i, d in enumerate(wrapper.data_source)}
    samples = [wrapper[index[d.impath + str(d.task)]] for d in picked]
    return (torch.stack([s["img"] for s in samples]),
            torch.tensor([s["label"] for s in samples]),
            torch.tensor([s["task"] for s in samples]))


def test_dualviewmi_suite_loss_is_per_task_ce_plus_mi_over_batch_classes(demo_root, tmp_path):
    trainer = build(demo_root, "DualViewMI", DV_CFG, tmp_path, "TRAINER.DUALVIEWMI.AUG", "none",
                    "TRAINER.DUALVIEWMI.MI_WEIGHT", "0.7", tasks="[]", shots="2")
    assert [t.name for t in trainer.tasks] == ["DemoDigit", "DemoParity", "DemoMagnitude"]
    with torch.no_grad():
        trainer.prompt_learner.ctx.normal_(0, 0.3)
    image, label, task = mixed_task_batch(trainer)
    loss, _, _, extra = trainer.forward_train(image, label, task)
    m, names = trainer.clip_model, trainer.dm.dataset.classnames
    with torch.no_grad():
        soft = direct_prompt_features(m, names, trainer.prompt_learner.ctx, "end")
        img = F.normalize(m.encode_image(image), dim=-1)
        logits = m.logit_scale.exp() * img @ soft.t()
        ce = 0.0
        for i in range(len(label)):  # each sample over its own task's classes only
            start, end = trainer.tasks[int(task[i])].label_range
            ce += F.cross_entropy(logits[i:i + 1, start:end], (label[i:i + 1] - start))
        ce = ce / len(label)
        # the per-task hand-crafted view: each task's own first template
        hand = torch.cat([F.normalize(m.encode_text(tokenize([t.templates[0].format(c)
                                                              for c in t.classnames])), dim=-1)
                          for t in trainer.tasks])
        classes = list(range(0, 10)) + [12, 13]  # DemoDigit and DemoMagnitude, not DemoParity
        mi = direct_infonce(soft[classes], hand[classes], 0.07)
    assert extra["ce"].item() == pytest.approx(ce.item(), abs=1e-4)
    assert extra["mi"].item() == pytest.approx(mi, abs=1e-4)
    assert loss.item() == pytest.approx(ce.item() + 0.7 * mi, abs=1e-4)


def test_kgcoop_term_equals_direct_computation(demo_root, tmp_path):
    trainer = build(demo_root, "KgCoOp", KG_CFG, tmp_path, "TRAINER.KGCOOP.W", "2.5",
                    "TRAINER.KGCOOP.TEMPLATES", "task_ensemble")
    with torch.no_grad():
        trainer.prompt_learner.ctx.normal_(0, 0.3)
    image, label, task = mixed_task_batch(trainer, want_tasks=(0,), per_task=4)
    loss, _, _, extra = trainer.forward_train(image, label, task)
    m, names = trainer.clip_model, trainer.dm.dataset.classnames
    with torch.no_grad():
        soft = direct_prompt_features(m, names, trainer.prompt_learner.ctx, "end")
        templates = ["a photo of the digit {}.", "a scan of a handwritten {}."]
        hand = F.normalize(torch.stack([F.normalize(m.encode_text(tokenize(
            [t.format(n) for n in names])), dim=-1) for t in templates]).mean(0), dim=-1)
        kg = sum(1 - float(soft[c] @ hand[c]) for c in range(10)) / 10
    assert extra["kg"].item() == pytest.approx(kg, abs=1e-5)
    assert loss.item() == pytest.approx(extra["ce"].item() + 2.5 * kg, abs=1e-5)
    assert kg > 0.01  # the perturbed context really moved away from the hand view


def test_base_model_evaluates_new_classes_with_new_names(demo_root, tmp_path):
    opts = ("TRAINER.DUALVIEWMI.MI_ESTIMATOR", "critic", "TRAINER.DUALVIEWMI.INFERENCE", "fused",
            "TRAINER.DUALVIEWMI.FUSE_WEIGHT", "0.3")
    base = build(demo_root, "DualViewMI", DV_CFG, tmp_path / "base", *opts,
                 "DATASET.SUBSAMPLE_CLASSES", "base")
    assert base.dm.dataset.classnames == ["zero", "one", "two", "three", "four"]
    with torch.no_grad():
        base.prompt_learner.ctx.add_(0.3 * torch.randn_like(base.prompt_learner.ctx))
        base.mi.soft_head.fc2.weight.normal_(0, 0.1)
    base.save_model(0, str(tmp_path / "base"))
    new = build(demo_root, "DualViewMI", DV_CFG, tmp_path / "new", *opts,
                "DATASET.SUBSAMPLE_CLASSES", "new")
    names = new.dm.dataset.classnames
    assert names == ["five", "six", "seven", "eight", "nine"]
    new.load_model(str(tmp_path / "base"))
    assert torch.equal(new.prompt_learner.ctx, base.prompt_learner.ctx)
    assert torch.equal(new.mi.soft_head.fc2.weight, base.mi.soft_head.fc2.weight)
    new.set_model_mode("eval")
    assert not new.class_aug.active
    images = torch.stack([new.dm.test_loader.dataset[i]["img"] for i in range(6)])
    got = new.model_inference(images)
    m = new.clip_model
    with torch.no_grad():
        soft = direct_prompt_features(m, names, base.prompt_learner.ctx, "end")
        hand = F.normalize(m.encode_text(tokenize([f"a photo of the digit {n}." for n in names])),
                           dim=-1)
        text = F.normalize(0.3 * soft + 0.7 * hand, dim=-1)
        img = F.normalize(m.encode_image(images), dim=-1)
        want = m.logit_scale.exp() * img @ text.t()
    assert got.shape == (6, 5)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def epoch_losses(trainer, epochs):
    """Mean training loss of each epoch, through the trainer's own loop."""
    losses = []
    step = trainer.forward_backward

    def recorded(batch):
        summary = step(batch)
        losses[-1].append(summary["loss"])
        return summary

    trainer.forward_backward = recorded
    for trainer.epoch in range(epochs):
        losses.append([])
        trainer.run_epoch()
    return [sum(l) / len(l) for l in losses]


@pytest.mark.parametrize("estimator,aug,partners,inference", [
    ("infonce", "none", "memory", "soft"),
    ("critic", "mixup", "memory", "fused"),
    ("infonce", "prototype", "memory", "soft"),
    ("infonce", "mixup", "batch", "soft"),
])
def test_each_option_learns_against_a_control(demo_root, tmp_path, estimator, aug, partners,
                                              inference):
    """The same run at learning rate 0 is the control: same batches, same
    mixing draws, unchanged prompts; training must end below its loss."""
    def run(lr):
        trainer = build(demo_root, "DualViewMI", DV_CFG, tmp_path / lr,
                        "TRAINER.DUALVIEWMI.MI_ESTIMATOR", estimator,
                        "TRAINER.DUALVIEWMI.AUG", aug, "TRAINER.DUALVIEWMI.AUG_PARTNERS", partners,
                        "TRAINER.DUALVIEWMI.INFERENCE", inference, "OPTIM.LR", lr,
                        "OPTIM.WARMUP_EPOCH", "0", "OPTIM.MAX_EPOCH", "5",
                        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", shots="4")
        torch.manual_seed(1)  # batch order and mixing coefficients
        return trainer, epoch_losses(trainer, 5)

    _, control = run("0.0")
    trainer, losses = run("0.001")
    assert losses[-1] < control[-1], (losses, control)
    print(f"{estimator}/{aug}/{partners}: last-epoch loss {losses[-1]:.4f}, "
          f"lr 0 {control[-1]:.4f}")
    if aug != "none":
        # run_epoch alone (no before/after_epoch): the count covers all 5 epochs
        assert trainer._aug_count[1] == 5 * 40
        if partners == "memory":  # 4 shots: every sample has 3 other images of its class
            assert trainer._aug_count[0] == 5 * 40
    if estimator == "critic":  # its heads are trained by the same optimizer step
        critic_control = run("0.0")[0].mi.state_dict()
        trained = trainer.mi.state_dict()
        assert any(not torch.equal(trained[k], critic_control[k]) for k in trained)
    accuracy = trainer.test()
    assert accuracy > 30.0  # chance is 10%


def test_choices_are_config_keys(demo_root, tmp_path):
    """The choices the README once called fixed are keys: CLASS_TOKEN_POSITION
    (the soft prompt's layout), MI_DIRECTION, AUG_UNPARTNERED (1 shot: no
    sample has a partner, so L_aug is 0 when they are skipped and the CE itself
    when they are kept) and AUG_MEMORY_TRANSFORM (train: each memory row is its
    image's feature with or without the training flip)."""
    trainer = build(demo_root, "DualViewMI", DV_CFG, tmp_path / "a",
                    "TRAINER.DUALVIEWMI.CTX_INIT", "", "TRAINER.DUALVIEWMI.N_CTX", "4",
                    "TRAINER.DUALVIEWMI.CLASS_TOKEN_POSITION", "front",
                    "TRAINER.DUALVIEWMI.MI_DIRECTION", "soft_to_hand", shots="1")
    with torch.no_grad():
        trainer.prompt_learner.ctx.normal_(0, 0.3)
    m, names = trainer.clip_model, trainer.dm.dataset.classnames
    batch = next(iter(trainer.train_loader_x))  # with the items' indices, as in training
    image, label, task = trainer.parse_batch_train(batch)
    index = batch["index"]
    trainer.set_model_mode("train")
    with torch.no_grad():
        loss, _, _, extra = trainer.forward_train(image, label, task)
        soft = direct_prompt_features(m, names, trainer.prompt_learner.ctx, "front")
        assert torch.allclose(trainer.text_features(torch.arange(10)), soft, atol=1e-5)
        want = infonce_mi_loss(soft, trainer.hand_text, 0.07, "a_to_b")
        assert extra["mi"].item() == pytest.approx(want.item(), abs=1e-4)
        assert extra["aug"].item() == 0.0  # one image per class: nobody has a partner
        assert trainer._aug_count == [0, label.numel()] and label.numel() > 1
        trainer.cfg.defrost()
        trainer.cfg.TRAINER.DUALVIEWMI.AUG_UNPARTNERED = "keep"
        trainer._batch_index = index
        kept = trainer.forward_train(image, label, task)[3]
        assert kept["aug"].item() == pytest.approx(kept["ce"].item(), abs=1e-6)

    flips = build(demo_root, "DualViewMI", DV_CFG, tmp_path / "b",
                  "TRAINER.DUALVIEWMI.AUG_MEMORY_TRANSFORM", "train",
                  "INPUT.TRANSFORMS", "['random_flip', 'normalize']", shots="2")
    torch.manual_seed(0)
    flips.fill_aug_memory()
    items = flips.train_loader_x.dataset.data_source
    test_view = flips.test_loader.dataset.transform  # resize, centre crop, normalise
    from toolbox.utils import read_image
    x = torch.stack([test_view(read_image(d.impath)) for d in items])
    plain, flipped = flips.encode_image(x), flips.encode_image(torch.flip(x, dims=[-1]))
    memory = flips.class_aug.memory
    is_plain = (memory - plain).abs().amax(1) < 1e-5
    is_flipped = (memory - flipped).abs().amax(1) < 1e-5
    assert bool((is_plain | is_flipped).all()) and 0 < int(is_flipped.sum()) < len(items)


@pytest.mark.parametrize("partners", ["memory", "batch"])
def test_train_py_logs_and_stores_the_partnered_fraction(demo_root, tmp_path, partners):
    import json

    from tests.conftest import run_train

    out = str(tmp_path / partners)
    proc = run_train("--root", demo_root, "--seed", "1", "--trainer", "DualViewMI",
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", DV_CFG, "--output-dir", out, "DATASET.NUM_SHOTS", "4",
                     "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "2",
                     "TRAINER.DUALVIEWMI.AUG_PARTNERS", partners)
    with open(osp.join(out, "results.json")) as f:
        got = json.load(f)["aug_partnered"]
    assert (got["source"], got["mode"]) == (partners, "mixup")
    assert [h["epoch"] for h in got["per_epoch"]] == [1, 2]
    assert all(h["samples"] == 56 for h in got["per_epoch"])  # 14 classes x 4 shots
    lines = [l for l in proc.stdout.splitlines() if "found a same-class partner" in l]
    assert len(lines) == 2
    if partners == "memory":
        assert got["fraction"] == 1.0 and "56/56 samples (100.0%)" in lines[0]
    else:  # batch 4 over 14 classes: a partner in the batch is the exception
        assert got["fraction"] < 0.6


def test_memory_reads_the_feature_cache_with_identical_results(demo_root, tmp_path):
    """The memory's test-transform features come from the feature cache ("train"
    split, shared with LinearProbeCLIP): cold, warm and disabled give one result."""
    import json

    from tests.conftest import run_train

    def run(tag, *opts):
        out = str(tmp_path / tag)
        proc = run_train("--root", demo_root, "--seed", "1", "--trainer", "DualViewMI",
                         "--dataset-config-file", "configs/datasets/demo.yaml",
                         "--config-file", DV_CFG, "--output-dir", out, "DATASET.NUM_SHOTS", "4",
                         "OPTIM.MAX_EPOCH", "2", *opts)
        with open(osp.join(out, "results.json")) as f:
            r = json.load(f)
        return proc.stdout, (r["overall"], [t["value"] for t in r["tasks"]], r["aug_partnered"])

    cache = ("FEATURE_CACHE.DIR", str(tmp_path / "cache"))
    cold_log, cold = run("cold", *cache)
    warm_log, warm = run("warm", *cache)
    _, off = run("off", "FEATURE_CACHE.ENABLED", "False")
    assert "Image features (train): 0 from the cache, 56 encoded" in cold_log
    assert "Image features (train): 56 from the cache, 0 encoded" in warm_log
    assert cold == warm == off


def test_bad_options_are_one_line_errors(demo_root, tmp_path):
    for key, value in (("AUG", "cutmix"), ("MI_ESTIMATOR", "mine"), ("INFERENCE", "hand"),
                       ("FUSE_WEIGHT", "1.5"), ("MI_TEMPERATURE", "0.0"), ("TEMPLATES", "x"),
                       ("MI_DIRECTION", "sideways"), ("MI_CRITIC_HIDDEN", "-1"),
                       ("AUG_MEMORY_TRANSFORM", "none"), ("AUG_UNPARTNERED", "drop"),
                       ("CLASS_TOKEN_POSITION", "start")):
        with pytest.raises(UserError, match=f"TRAINER.DUALVIEWMI.{key}"):
            build(demo_root, "DualViewMI", DV_CFG, tmp_path, f"TRAINER.DUALVIEWMI.{key}", value)


@pytest.mark.parametrize("aug,partners", [("prototype", "batch"), ("mixup", "memory")])
def test_resume_is_exact_with_augmentation_state_and_critic(demo_root, tmp_path, aug, partners):
    """DualViewMI with a critic (a second saved model) and class-wise
    augmentation whose state lies outside the saved weights (batch prototypes:
    running means; memory: rebuilt from the frozen encoder in a forked RNG): a
    run resumed from its epoch-1 checkpoints ends with exactly the
    uninterrupted run's weights, augmentation state and partner counts, also
    when a crash left the two models' pointers an epoch apart."""
    import shutil

    from toolbox.utils import set_random_seed

    opts = ("TRAINER.DUALVIEWMI.MI_ESTIMATOR", "critic", "TRAINER.DUALVIEWMI.AUG", aug,
            "TRAINER.DUALVIEWMI.AUG_PARTNERS", partners, "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.CHECKPOINT_KEEP", "0",
            "TEST.NO_TEST", "True")

    def run(out):
        set_random_seed(1)
        trainer = build(demo_root, "DualViewMI", DV_CFG, out, *opts, shots="4")
        trainer.train()
        return trainer

    full = run(tmp_path / "full")
    ckpt = torch.load(tmp_path / "full" / "prompt_learner" / "model.pth.tar-1", weights_only=True)
    if partners == "batch":
        assert full.class_aug.counts.sum() > 0
        assert set(ckpt["training_state"]) == {"aug_partnered", "class_prototypes",
                                               "class_counts"}
    else:
        assert full.class_aug.memory.shape[0] == len(full.dm.dataset.train_x) == 40
        assert set(ckpt["training_state"]) == {"aug_partnered"}
    assert [h["epoch"] for h in ckpt["training_state"]["aug_partnered"]] == [1]

    shutil.copytree(tmp_path / "full", tmp_path / "crashed")
    # killed while saving epoch 2: the prompt learner's pointer moved, the critic's did not
    (tmp_path / "crashed" / "mi_critic" / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = run(tmp_path / "crashed")
    assert resumed.start_epoch == 1
    for name in ("prompt_learner", "mi_critic"):
        a, b = full._models[name].state_dict(), resumed._models[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(full.class_aug.prototypes, resumed.class_aug.prototypes)
    assert torch.equal(full.class_aug.counts, resumed.class_aug.counts)
    assert resumed.aug_history == full.aug_history and len(full.aug_history) == 2
    if partners == "memory":  # 4 shots: every sample has 3 other images of its class
        assert all(h["fraction"] == 1.0 for h in full.aug_history)
