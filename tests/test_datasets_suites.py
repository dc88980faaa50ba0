"""Plant-6, RS-8, Fashion-20 and the suites (FewShot44 included) on tiny
images in their real layouts, loaded through the registry as train.py does."""
import contextlib
import io
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
import warnings

import pytest

from tests.conftest import ROOT, make_cfg
from tests.suite_layouts import (fashion_classes, write_fashion20, write_general10_stubs,
                                 write_plant6, write_rs8)
from toolbox.data.datasets import DATASET_REGISTRY
from toolbox.errors import UserError

import datasets  # noqa: F401
from datasets.suites import FASHION20_TASKS, GENERAL10_TASKS, PLANT6_TASKS, RS8_TASKS

PLANT6_COUNTS = {"FruitVegetable": 36, "KaggleFlower": 5, "KaggleMushroom": 9,
                 "KaggleVegetable": 15, "PlantSeedlingV1": 12, "PlantVillage": 39}
RS8_COUNTS = {"UCMerced": 21, "WHURS19": 19, "RSSCN7": 7, "AID": 30, "NWPURESISC45": 45,
              "PatternNet": 38, "OPTIMAL31": 31, "SIRIWHU": 12}


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def load(root, name, *opts, shots=2, seed=1):
    cfg = make_cfg(root, None, None, ["--seed", str(seed), "DATASET.NAME", name,
                                      "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False",
                                      *opts])
    return quiet(DATASET_REGISTRY.get(name), cfg)


def draw(ds, root):
    """Per task: the few-shot train images (paths relative to the data root)."""
    out = {t.name: [] for t in ds.tasks}
    for d in ds.train_x:
        out[ds.tasks[d.task].name].append(osp.relpath(d.impath, root))
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("suites"))
    write_plant6(root)
    write_rs8(root)
    write_fashion20(root)
    return root


def check_suite(ds, members):
    """Tasks in member order; label ranges contiguous from 0 and disjoint; each
    Datum's task and label agree and its class name is its task's."""
    assert [t.name for t in ds.tasks] == members
    offset = 0
    for t in ds.tasks:
        assert t.offset == offset
        offset += t.num_classes
    assert ds.num_classes == offset == len(ds.classnames)
    for items in (ds.train_x, ds.val, ds.test):
        for d in items:
            t = ds.tasks[d.task]
            assert t.offset <= d.label < t.offset + t.num_classes
            assert d.classname == t.classnames[d.label - t.offset]


def test_plant6_published_counts_clean_names_own_splits(data_root):
    ds = load(data_root, "Plant6", shots=0)
    check_suite(ds, PLANT6_TASKS)
    assert {t.name: t.num_classes for t in ds.tasks} == PLANT6_COUNTS
    assert ds.num_classes == 116
    names = {t.name: t.classnames for t in ds.tasks}
    village = names["PlantVillage"]
    assert village[:5] == ["apple scab", "apple black rot", "cedar apple rust",
                           "healthy apple leaf", "background without leaves"]
    assert "tomato two-spotted spider mite" in village and "bell pepper bacterial spot" in village
    assert names["KaggleFlower"] == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert "shepherd's purse" in names["PlantSeedlingV1"]
    assert {"jalapeno", "radish", "sweet potato"} <= set(names["FruitVegetable"])
    assert names["KaggleVegetable"][1] == "bitter gourd"
    # every readable name is lower case with no underscores
    assert all(c == c.lower() and "_" not in c for t in ds.tasks for c in t.classnames)
    # own split folders are kept: FruitVegetable test = its test/ folder (2 per class)
    by_task = {t.name: i for i, t in enumerate(ds.tasks)}
    fv_test = [d for d in ds.test if d.task == by_task["FruitVegetable"]]
    assert len(fv_test) == 36 * 2 and all("/test/" in d.impath for d in fv_test)
    # no split folders: seeded 50/20/30 of 6 images per class = 3/1/2
    fl = by_task["KaggleFlower"]
    sizes = [sum(d.task == fl for d in part) for part in (ds.train_x, ds.val, ds.test)]
    assert sizes == [15, 5, 10]
    # the made split is saved once and read back identically
    assert osp.isfile(osp.join(data_root, "kaggle_flower", "split_KaggleFlower.json"))
    again = load(data_root, "KaggleFlower", shots=0)
    assert [d.impath for d in again.test] == [d.impath for d in ds.test if d.task == fl]


def test_rs8_choice_and_class_total(data_root):
    ds = load(data_root, "RS8", shots=0)
    check_suite(ds, RS8_TASKS)
    assert {t.name: t.num_classes for t in ds.tasks} == RS8_COUNTS
    assert ds.num_classes == 203
    names = {t.name: t.classnames for t in ds.tasks}
    assert names["UCMerced"][2] == "baseball diamond"
    assert names["RSSCN7"] == ["grass", "field", "industrial area", "river or lake", "forest",
                               "residential area", "parking lot"]
    assert names["AID"][1] == "bare land" and "railway station" in names["WHURS19"]
    assert all(t.templates[0] == "a satellite photo of {}." for t in ds.tasks)


def test_fewshot_k_per_class_fewer_with_warning_and_stable_draws(data_root, tmp_path):
    ds = load(data_root, "Plant6", shots=2)
    for t_idx, t in enumerate(ds.tasks):
        labels = [d.label for d in ds.train_x if d.task == t_idx]
        assert sorted(labels) == sorted(list(range(t.offset, t.offset + t.num_classes)) * 2)
    cfg = make_cfg(data_root, "configs/datasets/kaggle_flower.yaml", None,
                   ["--seed", "1", "DATASET.NUM_SHOTS", "4", "VERBOSE", "False"])
    with pytest.warns(UserWarning, match="fewer than 4 images"):
        with contextlib.redirect_stdout(io.StringIO()):
            short = DATASET_REGISTRY.get("KaggleFlower")(cfg)
    assert len(short.train_x) == 5 * 3  # all 3 train images of each class

    # Same (shots, seed) on an untouched copy, tasks loaded in reverse order: same draw.
    fresh = str(tmp_path / "copy")
    shutil.copytree(data_root, fresh, ignore=shutil.ignore_patterns("split_fewshot"))
    rev = load(fresh, "Plant6", "DATASET.TASKS", str(list(range(5, -1, -1))), shots=2)
    assert [t.name for t in rev.tasks] == PLANT6_TASKS[::-1]
    assert draw(rev, fresh) == draw(ds, data_root)
    assert draw(load(data_root, "Plant6", shots=2), data_root) == draw(ds, data_root)  # cached
    other_seed = draw(load(data_root, "Plant6", shots=2, seed=2), data_root)
    assert other_seed != draw(ds, data_root)


def test_tasks_subset_by_name_and_index(data_root):
    ds = load(data_root, "Plant6", "DATASET.TASKS", "['KaggleFlower', 4]", shots=1)
    check_suite(ds, ["KaggleFlower", "PlantSeedlingV1"])
    assert [t.label_range for t in ds.tasks] == [(0, 5), (5, 17)]
    assert {d.task for d in ds.train_x} == {0, 1} and len(ds.train_x) == 17
    with pytest.raises(UserError, match="index 6 out of range"):
        load(data_root, "Plant6", "DATASET.TASKS", "[6]")
    with pytest.raises(UserError, match="unknown task 'Roses'"):
        load(data_root, "Plant6", "DATASET.TASKS", "['Roses']")


def test_fashion20_tasks_from_task_info(data_root):
    ds = load(data_root, "Fashion20", shots=0)
    check_suite(ds, FASHION20_TASKS)
    assert len(ds.tasks) == 20 and ds.num_classes == 78
    assert all(t.metric == "mean_per_class" for t in ds.tasks)
    assert ds.tasks[0].name == "FashionPantsType"
    # SoftCPT's task prompt: the task name alone, as upstream ("X X X X pants type.")
    from trainers.softcpt import task_text
    assert [task_text(t, "name") for t in ds.tasks[:3]] == [
        "pants type", "pants length", "waist type"]
    assert task_text(ds.tasks[-2], "name") == "number of button rows"
    assert ds.tasks[0].classnames == ["pants style a", "pants style b", "pants style c",
                                      "pants style d"]
    # 5 images per class -> round(2.5)=2 / 1 / 2 per class
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (78 * 2, 78, 78 * 2)
    # images of task 3 (collar_type) come from images/3/
    assert all(f"{os.sep}images{os.sep}3{os.sep}" in d.impath for d in ds.test if d.task == 3)


def test_fashion20_softcpt_task_info_with_ids_and_header(tmp_path):
    write_fashion20(str(tmp_path), n=3, header=True, with_ids=True)
    ds = load(str(tmp_path), "FashionSkirtLength", shots=0)
    assert ds.tasks[0].classnames == [c.lower().replace("_", " ").replace("-", " ")
                                      for c in fashion_classes()["skirt_length"]]
    assert ds.tasks[0].metric == "mean_per_class"


def test_fashion20_bad_task_info_is_one_line_error(tmp_path):
    root = str(tmp_path)
    write_fashion20(root, n=3)
    info = osp.join(root, "fashion20", "task_info.csv")
    with open(info) as f:
        good = f.read()
    header = good.splitlines()[0]
    for text, pattern in [(f"{header}\npants_type wide,straight\n{good}", "line 2"),  # no TAB
                          (good + "hat_style\tcap\n", "two or more distinct"),
                          (good.replace("socks_type", "sock_colour"), "task name among")]:
        with open(info, "w") as f:
            f.write(text)
        with pytest.raises(UserError, match=pattern) as e:
            load(root, "FashionPantsType", shots=0)
        assert "\n" not in str(e.value) and "Fashion-20" in str(e.value)
    os.remove(info)
    with pytest.raises(UserError, match=r"dataset file not found: .*task_info\.csv") as e:
        load(root, "FashionHatStyle", shots=0)
    assert "\n" not in str(e.value)
    # a class folder task_info.csv does not know about
    with open(info, "w") as f:
        f.write(good)
    os.makedirs(osp.join(root, "fashion20", "images", "0", "7"))
    with pytest.raises(UserError, match="lists 4 classes for 'pants_type'"):
        load(root, "FashionPantsType", shots=0)


def test_missing_class_folder_names_it(tmp_path):
    root = str(tmp_path)
    write_plant6(root, n=2)
    village = osp.join(root, "plant_village", "Plant_leave_diseases_dataset_without_augmentation")
    shutil.rmtree(osp.join(village, "Background_without_leaves"))
    with pytest.raises(UserError, match="class folder not found: .*Background_without_leaves"):
        load(root, "PlantVillage", shots=0)


DRAW_SCRIPT = """
import contextlib, io, json, sys, time, warnings
sys.path.insert(0, {repo!r})
from tests.conftest import make_cfg
from toolbox.data.datasets import DATASET_REGISTRY
import datasets
cfg = make_cfg({root!r}, None, None, ["--seed", "3", "DATASET.NAME", "KaggleMushroom",
                                      "DATASET.NUM_SHOTS", "2", "VERBOSE", "False"])
while time.time() < {start}:
    time.sleep(0.005)
with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ds = DATASET_REGISTRY.get("KaggleMushroom")(cfg)
print(json.dumps([d.impath for d in ds.train_x]))
"""


def test_two_processes_same_draw_leave_one_valid_cache(tmp_path):
    root = str(tmp_path)
    write_plant6(root, n=4)
    start = time.time() + 12  # both past their imports before they draw
    script = DRAW_SCRIPT.format(repo=ROOT, root=root, start=start)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    draws = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert draws[0] == draws[1] and len(draws[0]) == 9 * 2
    ddir = osp.join(root, "kaggle_mushroom")
    leftovers = [f for _, _, files in os.walk(ddir) for f in files
                 if not f.endswith((".jpg", ".json"))]
    assert leftovers == []
    assert os.listdir(osp.join(ddir, "split_fewshot")) == ["KaggleMushroom_shot_2-seed_3.json"]
    with open(osp.join(ddir, "split_fewshot", "KaggleMushroom_shot_2-seed_3.json")) as f:
        cache = json.load(f)
    assert [osp.join(ddir, "Mushrooms", p) for p, _, _ in cache["train"]] == draws[0]
    json.load(open(osp.join(ddir, "split_KaggleMushroom.json")))  # the split file is whole too


def test_fewshot44_over_cached_splits_reads_no_image(data_root, tmp_path, monkeypatch):
    """All 44 tasks, General-10 from split files whose images do not exist."""
    root = str(tmp_path / "data44")
    shutil.copytree(data_root, root)
    write_general10_stubs(root)
    first = load(root, "FewShot44", shots=2)
    members = GENERAL10_TASKS + PLANT6_TASKS + RS8_TASKS + FASHION20_TASKS
    check_suite(first, members)
    assert len(first.tasks) == 44 and first.num_classes == 1191 + 116 + 203 + 78

    import PIL.Image

    def no_image(*args, **kwargs):
        raise AssertionError("an image was opened while building the dataset")

    monkeypatch.setattr(PIL.Image, "open", no_image)
    t0 = time.time()
    second = load(root, "FewShot44", shots=2)
    elapsed = time.time() - t0
    assert elapsed < 10, elapsed
    assert draw(second, root) == draw(first, root)
    # the Plant-6 part of the joint draw equals Plant-6 drawn on its own
    alone = draw(load(data_root, "Plant6", shots=2), data_root)
    joint = draw(second, root)
    assert all(joint[name] == alone[name] for name in PLANT6_TASKS)
    sub = load(root, "FewShot44", "DATASET.TASKS", "['SUN397', 43]", shots=2)
    assert [t.name for t in sub.tasks] == ["SUN397", "FashionUnderwearStyle"]
    assert sub.tasks[1].offset == 397


def test_every_task_has_prompt_text_metric_and_config():
    from toolbox.data.tasks import METRICS
    from tools.grid_plan import is_suite

    members = GENERAL10_TASKS + PLANT6_TASKS + RS8_TASKS + FASHION20_TASKS
    assert len(members) == len(set(members)) == 44
    suite_key = {}  # DATASET.NAME -> DATASET.SUITE of its config
    for fname in os.listdir(osp.join(ROOT, "configs", "datasets")):
        cfg = make_cfg("/nonexistent", f"configs/datasets/{fname}")
        suite_key[cfg.DATASET.NAME] = cfg.DATASET.SUITE
        # the scripts' schedule choice reads the same key (no comment marker)
        assert is_suite(fname[:-len(".yaml")]) is cfg.DATASET.SUITE, fname
    for name in members:
        cls = DATASET_REGISTRY.get(name)
        assert cls.task_description and cls.metric in METRICS, name
        assert cls.templates and all(t.count("{}") == 1 for t in cls.templates), name
        assert suite_key.get(name) is False, name
    for suite in ("General10", "Plant6", "RS8", "Fashion20", "FewShot44", "Demo"):
        assert suite_key[suite] is True, suite
    assert DATASET_REGISTRY.get("FewShot44").members == members
    fashion_metrics = {DATASET_REGISTRY.get(n).metric for n in FASHION20_TASKS}
    assert fashion_metrics == {"mean_per_class"}


@pytest.mark.parametrize("name", ["KaggleFlower", "FashionSkirtLength"])
def test_split_file_with_other_class_names_is_an_error_naming_it(tmp_path, name):
    """A split file keeps the class names it was made with: when the dataset
    code (a class list) or task_info.csv names a class otherwise, loading stops
    with one line naming the file to delete, instead of training on old names."""
    from tests.suite_layouts import class_folder_task

    root = str(tmp_path)
    cls = DATASET_REGISTRY.get(name)
    if name == "KaggleFlower":
        class_folder_task(root, cls, n=3)
    else:
        write_fashion20(root, n=3)
    ds = load(root, name, shots=0)  # makes and saves the split
    path = cls.split_path_in(root)
    with open(path) as f:
        split = json.load(f)
    old = ds.classnames[1]
    for part in ("train", "val", "test"):
        split[part] = [[p, y, "renamed" if y == 1 else c] for p, y, c in split[part]]
    with open(path, "w") as f:
        json.dump(split, f)
    with pytest.raises(UserError) as info:
        load(root, name, shots=0)
    msg = str(info.value)
    assert "\n" not in msg and f"split file {path} was made by an older version" in msg
    assert f"label 1: 'renamed' in the file, '{old}' in the code" in msg
    assert f"delete {path}" in msg
