"""Few-shot draws and base/new subsampling."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, make_cfg
from toolbox.data.datasets import build_dataset
from toolbox.data.datasets.base_dataset import DatasetBase, Datum

import datasets  # noqa: F401


def load(root, *opts):
    cfg = make_cfg(root, "configs/datasets/demo.yaml", None,
                   ["--seed", "1", "VERBOSE", "False", *opts])
    return build_dataset(cfg)


DRAW = """
import sys, json
sys.path.insert(0, {root!r})
import datasets
from tests.conftest import make_cfg
from toolbox.data.datasets import build_dataset
cfg = make_cfg({data!r}, "configs/datasets/demo.yaml", None,
               ["--seed", "3", "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", {tasks!r}, "VERBOSE", "False"])
ds = build_dataset(cfg)
print(json.dumps(sorted(d.impath.split("images/")[1] + ":" + ds.tasks[d.task].name for d in ds.train_x)))
"""


def test_fewshot_draws_equal_across_processes_and_task_order(tmp_path):
    """Two processes with different hash seeds, different data roots (no shared
    cache) and different task orders draw the same images per task."""
    from datasets.demo import ensure_demo_images
    outs = []
    for i, tasks in enumerate(["['DemoDigit','DemoParity']", "['DemoParity','DemoDigit']"]):
        data = str(tmp_path / f"root{i}")
        ensure_demo_images(os.path.join(data, "demo_digits"))
        code = DRAW.format(root=ROOT, data=data, tasks=tasks)
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, env=dict(os.environ, PYTHONHASHSEED=str(i + 7)))
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    assert len(outs[0]) == 2 * 10 + 2 * 2


def test_fewshot_k_per_class_cached_and_seed_dependent(demo_root):
    a = load(demo_root, "DATASET.NUM_SHOTS", "4", "DATASET.TASKS", "['DemoDigit']")
    b = load(demo_root, "DATASET.NUM_SHOTS", "4", "DATASET.TASKS", "['DemoDigit']")
    counts = {}
    for d in a.train_x:
        counts[d.label] = counts.get(d.label, 0) + 1
    assert counts == {k: 4 for k in range(10)}
    assert len(a.val) == 10 * 4  # min(K, 4) per class
    assert [d.impath for d in a.train_x] == [d.impath for d in b.train_x]
    cache = os.path.join(demo_root, "demo_digits", "split_fewshot", "DemoDigit_shot_4-seed_1.json")
    assert os.path.exists(cache)
    c = load(demo_root, "DATASET.NUM_SHOTS", "4", "DATASET.TASKS", "['DemoDigit']", "SEED", "2")
    assert [d.impath for d in c.train_x] != [d.impath for d in a.train_x]


def test_base_new_subsampling(demo_root):
    full = load(demo_root, "DATASET.TASKS", "['DemoDigit']")
    base = load(demo_root, "DATASET.TASKS", "['DemoDigit']", "DATASET.SUBSAMPLE_CLASSES", "base")
    new = load(demo_root, "DATASET.TASKS", "['DemoDigit']", "DATASET.SUBSAMPLE_CLASSES", "new")
    assert base.classnames == ["zero", "one", "two", "three", "four"]
    assert new.classnames == ["five", "six", "seven", "eight", "nine"]
    assert sorted({d.label for d in new.test}) == [0, 1, 2, 3, 4]
    assert all(d.classname == new.classnames[d.label] for d in new.test)
    assert len(base.test) + len(new.test) == len(full.test)
    # odd class counts: base gets ceil(n/2)
    items = [Datum(impath=f"{i}.png", label=i, classname=str(i)) for i in range(7)]
    b, = DatasetBase.subsample_classes(items, subsample="base")
    n, = DatasetBase.subsample_classes(items, subsample="new")
    assert [d.classname for d in b] == ["0", "1", "2", "3"]
    assert [(d.label, d.classname) for d in n] == [(0, "4"), (1, "5"), (2, "6")]


def test_suite_labels_are_disjoint_and_contiguous(demo_root):
    ds = load(demo_root, "DATASET.NUM_SHOTS", "2")
    assert [(t.name, t.label_range) for t in ds.tasks] == [
        ("DemoDigit", (0, 10)), ("DemoParity", (10, 12)), ("DemoMagnitude", (12, 14))]
    for d in ds.train_x + ds.test:
        lo, hi = ds.tasks[d.task].label_range
        assert lo <= d.label < hi
        assert ds.classnames[d.label] == d.classname
    sub = load(demo_root, "DATASET.TASKS", "['2', 'DemoParity']")
    assert [t.name for t in sub.tasks] == ["DemoMagnitude", "DemoParity"]
    with pytest.raises(Exception, match="unknown task 'Nope'"):
        load(demo_root, "DATASET.TASKS", "['Nope']")
