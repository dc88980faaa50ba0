"""Adding a dataset takes one class, one decorator and one config file
(README, 'Adding a dataset'): a dataset defined here trains CoOp end to end."""
import json
import os
import os.path as osp

import numpy as np
import torch
from PIL import Image, ImageDraw

from tests.conftest import make_cfg
from toolbox.data.datasets import DATASET_REGISTRY
from toolbox.data.datasets.check import check_data
from toolbox.data.datasets.task_dataset import TaskDataset
from toolbox.engine import build_trainer

import datasets  # noqa: F401
import trainers  # noqa: F401


@DATASET_REGISTRY.register()
class ToyShapes(TaskDataset):
    """$DATA/toy_shapes/images/<shape>/*.png, split 50/20/30 once."""

    dataset_dir = "toy_shapes"
    image_dir = "images"
    task_description = "which shape is drawn"
    templates = ["a drawing of a {}.", "a photo of a {}."]
    datasets_md_section = "ToyShapes"


def write_shapes(image_dir, per_class=20):
    rng = np.random.default_rng(0)
    for shape in ("circle", "square", "triangle"):
        for j in range(per_class):
            im = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 80, 3)))
            d = ImageDraw.Draw(im)
            a, b = int(rng.integers(2, 8)), int(rng.integers(24, 30))
            if shape == "circle":
                d.ellipse([a, a, b, b], fill=(250, 250, 250))
            elif shape == "square":
                d.rectangle([a, a, b, b], fill=(250, 250, 250))
            else:
                d.polygon([(a, b), (b, b), ((a + b) // 2, a)], fill=(250, 250, 250))
            path = osp.join(image_dir, shape, f"{j:02d}.png")
            os.makedirs(osp.dirname(path), exist_ok=True)
            im.save(path)


def test_new_dataset_trains_coop_one_epoch(tmp_path):
    root = tmp_path / "data"
    write_shapes(str(root / "toy_shapes" / "images"))
    config = tmp_path / "toy_shapes.yaml"
    config.write_text('# ToyShapes: which shape is drawn\nDATASET:\n  NAME: "ToyShapes"\n')
    out = tmp_path / "out"
    cfg = make_cfg(root, str(config), "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                   ["--trainer", "CoOp", "--seed", "1", "--output-dir", str(out),
                    "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
                    "MODEL.BACKBONE.NAME", "tiny-vit", "TRAINER.COOP.CTX_INIT", "a drawing of a",
                    "VERBOSE", "False"])
    assert [c.ok for c in check_data(cfg)] == [True]  # the data check knows it too
    trainer = build_trainer(cfg)
    dm = trainer.dm
    assert dm.dataset.tasks[0].name == "ToyShapes"
    assert dm.dataset.classnames == ["circle", "square", "triangle"]
    assert len(dm.dataset.train_x) == 3 * 4 and len(dm.dataset.test) == 3 * 6
    ctx = trainer.prompt_learner.ctx.detach().clone()
    trainer.train()
    assert not torch.equal(ctx, trainer.prompt_learner.ctx.detach())  # it learned
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["dataset"] == "ToyShapes" and results["epoch"] == 1
    (task,) = results["tasks"]
    assert task["task"] == "ToyShapes" and task["metric"] == "accuracy"
    assert 0.0 <= task["value"] <= 100.0
    # the split was saved once in the CoOp format, relative to image_dir
    with open(root / "toy_shapes" / "split_ToyShapes.json") as f:
        split = json.load(f)
    assert sorted({c for _, _, c in split["train"]}) == ["circle", "square", "triangle"]
    assert all(not osp.isabs(p) for p, _, _ in split["test"])
