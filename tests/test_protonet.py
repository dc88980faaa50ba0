"""ProtoNet (nearest class mean of frozen CLIP features): predictions equal a
numpy computation, it beats chance on the demo through train.py, and its saved
prototypes evaluate the same in --eval-only."""
import json

import numpy as np
import torch

from tests.conftest import make_cfg, run_train
from toolbox.engine import build_trainer
from toolbox.utils import set_random_seed

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)

DEMO = "configs/datasets/demo.yaml"


def test_predictions_equal_a_numpy_nearest_mean(demo_root, tmp_path):
    cfg = make_cfg(demo_root, DEMO, "configs/trainers/ProtoNet/tiny_vit.yaml",
                   ["--trainer", "ProtoNet", "--output-dir", str(tmp_path / "p"), "--seed", "1",
                    "DATASET.NUM_SHOTS", "2", "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "FEATURE_CACHE.ENABLED", "False"])
    set_random_seed(1)
    trainer = build_trainer(cfg)
    trainer.fit()
    ds = trainer.dm.dataset

    def feats(items):
        from toolbox.data.data_manager import build_data_loader

        loader = build_data_loader(cfg, "SequentialSampler", data_source=items, batch_size=64,
                                   tfm=trainer.dm.tfm_test, is_train=False)
        with torch.no_grad():
            return np.concatenate([trainer.clip_model.encode_image(b["img"]).numpy()
                                   for b in loader]).astype(np.float64)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    x_tr, y_tr = unit(feats(ds.train_x)), np.array([it.label for it in ds.train_x])
    test = ds.test[::7]
    x_te, y_te = unit(feats(test)), np.array([it.label for it in test])
    protos = unit(np.stack([x_tr[y_tr == c].mean(0) for c in range(trainer.num_classes)]))
    scores = x_te @ protos.T
    want = []
    for x, it in zip(scores, test):  # each image's own task's classes
        lo, hi = trainer.tasks[it.task].label_range
        want.append(lo + int(np.argmax(x[lo:hi])))
    with torch.no_grad():
        logits = trainer.model_inference(_images(trainer, test))
    got = []
    for row, it in zip(logits.numpy(), test):
        lo, hi = trainer.tasks[it.task].label_range
        got.append(lo + int(np.argmax(row[lo:hi])))
    assert got == want
    assert np.allclose(logits.numpy() / trainer.logit_scale, scores, atol=1e-5)
    assert (np.array(want) == y_te).mean() > 0.3  # far above chance on DemoDigit's 10


def _images(trainer, items):
    from toolbox.data.data_manager import build_data_loader

    loader = build_data_loader(trainer.cfg, "SequentialSampler", data_source=items,
                               batch_size=len(items), tfm=trainer.dm.tfm_test, is_train=False)
    return next(iter(loader))["img"]


def test_runs_through_train_py_beats_chance_and_evaluates_again(demo_root, tmp_path):
    out = tmp_path / "pn"
    common = ["--root", demo_root, "--seed", "1", "--trainer", "ProtoNet",
              "--dataset-config-file", DEMO,
              "--config-file", "configs/trainers/ProtoNet/tiny_rn.yaml"]
    shots = ["DATASET.NUM_SHOTS", "4"]
    run_train(*common, "--output-dir", out, *shots)
    res = json.load(open(out / "results.json"))
    chance = {"DemoDigit": 10.0, "DemoParity": 50.0, "DemoMagnitude": 50.0}
    for t in res["tasks"]:
        assert t["value"] > chance[t["task"]] + 10, t
    run_train(*common, "--output-dir", tmp_path / "again", "--eval-only", "--model-dir", out,
              *shots)
    again = json.load(open(tmp_path / "again" / "results.json"))
    assert again["overall"] == res["overall"]
    proc = run_train(*common, "--output-dir", tmp_path / "x", "--eval-only", "--model-dir",
                     tmp_path / "none", *shots, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no ProtoNet prototypes")


def test_a_class_without_shots_is_a_one_line_error(demo_root, tmp_path):
    from toolbox.errors import UserError

    cfg = make_cfg(demo_root, DEMO, "configs/trainers/ProtoNet/tiny_rn.yaml",
                   ["--trainer", "ProtoNet", "--output-dir", str(tmp_path / "p"), "--seed", "1",
                    "DATASET.NUM_SHOTS", "1", "VERBOSE", "False", "TEST.NO_TEST", "True"])
    trainer = build_trainer(cfg)
    trainer.dm.dataset._train_x = [it for it in trainer.dm.dataset.train_x if it.label != 3]
    try:
        trainer.fit()
    except UserError as e:
        assert "has no training image" in str(e)
    else:
        raise AssertionError("no error")
