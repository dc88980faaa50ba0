"""Adding a dataset takes one class, one decorator and one config file
(docs/adding_a_dataset.md): a dataset defined here trains CoOp end to end."""
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


DOC = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "docs", "adding_a_dataset.md")


def doc_block(start):
    """The code block of docs/adding_a_dataset.md whose first line is ``start``."""
    with open(DOC) as f:
        text = f.read()
    i = text.index(start)
    return text[i:text.index("```", i)]


def test_doc_multitask_example_trains_two_tasks(tmp_path):
    """docs/adding_a_dataset.md: the multi-task example, run exactly as the page shows it."""
    names = ("ToyShape", "ToyColour", "ToyAttrs")
    if not all(n in DATASET_REGISTRY.registered_names() for n in names):
        exec(compile(doc_block("# datasets/toy_attrs.py"), DOC, "exec"), {})
    root = tmp_path / "data"
    write_shapes(str(root / "toy_attrs" / "shape"), per_class=10)
    rng = np.random.default_rng(1)
    for colour, rgb in (("red", (220, 30, 30)), ("green", (30, 200, 30))):
        for j in range(10):
            im = Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 60, 3)))
            ImageDraw.Draw(im).ellipse([4, 4, 28, 28], fill=rgb)
            path = root / "toy_attrs" / "colour" / colour / f"{j:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            im.save(path)
    config = tmp_path / "toy_attrs.yaml"
    config.write_text(doc_block("# configs/datasets/toy_attrs.yaml"))
    out = tmp_path / "out"
    cfg = make_cfg(root, str(config), "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                   ["--trainer", "CoOp", "--seed", "1", "--output-dir", str(out),
                    "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
                    "VERBOSE", "False"])
    assert cfg.DATASET.SUITE is True
    assert [c.ok for c in check_data(cfg)] == [True, True]
    trainer = build_trainer(cfg)
    tasks = trainer.dm.dataset.tasks
    assert [t.name for t in tasks] == ["ToyShape", "ToyColour"]
    assert tasks[1].offset == 3 and tasks[1].classnames == ["green", "red"]
    trainer.train()
    with open(out / "results.json") as f:
        results = json.load(f)
    assert [(t["task"], t["metric"]) for t in results["tasks"]] == [
        ("ToyShape", "accuracy"), ("ToyColour", "mean_per_class")]
    assert osp.isfile(root / "toy_attrs" / "split_ToyColour.json")
