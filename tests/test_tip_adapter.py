"""Tip-Adapter / Tip-Adapter-F: the cache keys from the feature cache's training views,
the logits against a direct computation, the alpha/beta search reading the val split only
(a poisoned test split changes the test result, not the choice), -F learning against an
LR-0 control and changing only the keys, train.py on the demo with an OpenCLIP model."""
import json
import math
import tempfile

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_cfg, run_train
from tests.controls import LR0, assert_learned, epoch_losses
from toolbox.data.datasets import Datum
from toolbox.engine import build_trainer
from toolbox.metrics.per_task import task_metric
from toolbox.utils import set_random_seed
from trainers.feature_cache import train_view_features
from trainers.tip_adapter import search_grid

import datasets  # noqa: F401
import trainers  # noqa: F401


def build(root, trainer="TipAdapter", *opts, shots=2, dataset="demo"):
    out = tempfile.mkdtemp(prefix="tip-", dir=root)
    config = {"TipAdapter": "configs/trainers/TipAdapter/tiny_vit.yaml",
              "TipAdapterF": "configs/trainers/TipAdapterF/tiny_vit_ep10.yaml"}[trainer]
    cfg = make_cfg(root, f"configs/datasets/{dataset}.yaml", config,
                   ["--trainer", trainer, "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False",
                    "TRAIN.PRINT_FREQ", "1000", *opts])
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def test_keys_average_the_training_views_and_logits_equal_a_direct_computation(demo_root):
    # flips make the views differ; the keys are their mean, normalised
    trainer = build(demo_root, "TipAdapter", "INPUT.TRANSFORMS", "['random_flip', 'normalize']",
                    "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "3")
    items = trainer.dm.dataset.train_x
    views = train_view_features(trainer, items, 3)
    assert not torch.allclose(views[0], views[1])
    keys = trainer.adapter.weight.detach()
    assert torch.allclose(keys, F.normalize(views.mean(0), dim=-1), atol=1e-6)
    trainer.alpha = torch.tensor([0.7, 2.5, 4.0])  # per task
    trainer.beta = torch.tensor([3.0, 5.5, 1.5])
    test = trainer.dm.dataset.test[:3] + trainer.dm.dataset.test[-3:]
    image = torch.stack([trainer.dm.tfm_test(__import__("PIL.Image").Image.open(it.impath)
                                             .convert("RGB")) for it in test])
    trainer.set_model_mode("eval")
    got = trainer.model_inference(image)
    f = trainer.encode_image(image)
    w = trainer.clip_weights
    labels = [it.label for it in items]
    want = torch.zeros(len(test), trainer.num_classes)
    for i in range(len(test)):
        for c in range(trainer.num_classes):
            t = int(trainer.owner[c])
            a, b = float(trainer.alpha[t]), float(trainer.beta[t])
            cache = sum(math.exp(-b * (1 - float(f[i] @ keys[j])))
                        for j in range(len(items)) if labels[j] == c)
            want[i, c] = trainer.logit_scale * float(f[i] @ w[c]) + a * cache
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5), (got - want).abs().max()


def poison(trainer):
    """Every test label moved to the next class of its task."""
    def moved(it):
        lo, hi = trainer.tasks[it.task].label_range
        return Datum(impath=it.impath, label=lo + (it.label - lo + 1) % (hi - lo),
                     domain=it.domain, classname=it.classname, task=it.task)

    ds = trainer.test_loader.dataset
    ds.data_source = [moved(it) for it in ds.data_source]


def test_search_reads_val_only_and_matches_the_best_grid_point(demo_root):
    opts = ("TRAINER.TIP_ADAPTER.SEARCH_STEP", "[20, 5]")
    clean, poisoned = build(demo_root, "TipAdapter", *opts), build(demo_root, "TipAdapter", *opts)
    poison(poisoned)
    clean.train()
    poisoned.train()
    res = [json.load(open(f"{t.output_dir}/results.json")) for t in (clean, poisoned)]
    assert res[0]["overall"] != res[1]["overall"]  # the poison reaches the test numbers...
    assert res[0]["alpha"] == res[1]["alpha"] and res[0]["beta"] == res[1]["beta"]  # ...not the choice
    # the choice is the first best of upstream's grid on the val split, by brute force
    t, task = 2, clean.tasks[2]  # DemoMagnitude: mean per-class accuracy
    lo, hi = task.label_range
    val = [it for it in clean.dm.dataset.val if it.task == t]
    feats = clean.features(val, "val")
    y = torch.tensor([it.label - lo for it in val])
    (s_beta, s_alpha), _, _ = clean.task_choice(task)
    best = (-1, None)
    for beta in search_grid(s_beta, 20):
        for alpha in search_grid(s_alpha, 5):
            clean.alpha[t], clean.beta[t] = alpha, beta
            pred = clean.logits(feats)[:, lo:hi].argmax(1)
            acc = task_metric(task.metric, y.numpy(), pred.numpy())
            if acc > best[0] + 1e-9:
                best = (acc, (alpha, beta))
    assert res[0]["search"][task.name]["val"] == best[0]
    assert (res[0]["alpha"][task.name], res[0]["beta"][task.name]) == pytest.approx(best[1])
    assert best[1] != (0.1, 0.1)  # not the grid's first point: the search chose


def test_tip_adapter_f_learns_only_the_keys_against_lr0_control(demo_root):
    opts = ("TEST.NO_TEST", "True")
    control = epoch_losses(build(demo_root, "TipAdapterF", *opts, *LR0, shots=4))
    trainer = build(demo_root, "TipAdapterF", *opts, shots=4)
    keys, values, text = (trainer.adapter.weight.detach().clone(), trainer.values.clone(),
                          trainer.clip_weights.clone())
    print(assert_learned(epoch_losses(trainer), control))
    assert not torch.allclose(trainer.adapter.weight, keys)
    assert torch.equal(trainer.values, values) and torch.equal(trainer.clip_weights, text)
    assert [n for n, p in trainer.adapter.named_parameters() if p.requires_grad] == ["weight"]


def test_train_py_on_one_task_with_an_openclip_model(demo_root, tmp_path):
    out = tmp_path / "tipf"
    run_train("--root", demo_root, "--seed", "1", "--trainer", "TipAdapterF",
              "--dataset-config-file", "configs/datasets/demo_parity.yaml",
              "--config-file", "configs/trainers/TipAdapterF/tiny_vit_ep10.yaml",
              "--output-dir", out, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2",
              "MODEL.BACKBONE.NAME", "open_clip:tiny-ViT", "MODEL.BACKBONE.PRETRAINED", "random")
    res = json.load(open(out / "results.json"))
    assert res["backbone"] == "open_clip:tiny-ViT" and set(res["alpha"]) == {"DemoParity"}
    assert res["search"]["DemoParity"]["val"] >= 0 and res["tasks"][0]["task"] == "DemoParity"
