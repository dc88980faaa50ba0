"""General-10 and the ImageNet family on tiny images in their real on-disk layouts.

One module fixture writes every dataset (full published class lists, 1-4
images per class) under one DATA root; each test loads through the registry
exactly as train.py does.
"""
import io
import json
import os
import os.path as osp
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, make_cfg
from toolbox.data.datasets import DATASET_REGISTRY, build_dataset
from toolbox.errors import UserError

import datasets  # noqa: F401
from datasets.common import load_list, split_camel_case
from datasets.oxford_pets import OxfordPets


def _image_bytes(fmt, color):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image_bytes("JPEG", (200, 30, 30))
PNG = _image_bytes("PNG", (30, 30, 200))


def put(path, data=JPEG):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_text(path, lines):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def counts(classes, normal):
    """Images per class: ``normal``, but the last class gets one (a short class)."""
    return [(i, c, 1 if i == len(classes) - 1 else normal) for i, c in enumerate(classes)]


# ---- layout writers (one per on-disk format) ---------------------------------------------

def class_folders(folder, classes, n=4):
    for _, c, k in counts(classes, n):
        for j in range(k):
            put(osp.join(folder, c, f"{c}_{j:04d}.jpg"))


def write_fgvc(d):
    classes = load_list("fgvc_aircraft.txt")
    write_text(osp.join(d, "variants.txt"), classes)
    lists = {"train": [], "val": [], "test": []}
    n = 0
    for _, c, k in counts(classes, 2):
        for split, m in (("train", k), ("val", 1), ("test", 1)):
            for _ in range(m):
                n += 1
                put(osp.join(d, "images", f"{n:07d}.jpg"))
                lists[split].append(f"{n:07d} {c}")
    for split, lines in lists.items():
        write_text(osp.join(d, f"images_variant_{split}.txt"), lines)


def write_flowers(d):
    from scipy.io import savemat

    names = load_list("oxford_flowers.txt")
    labels = []
    for i, _, k in counts(names, 4):
        labels += [i + 1] * k
    for n in range(len(labels)):
        put(osp.join(d, "jpg", f"image_{n + 1:05d}.jpg"))
    savemat(osp.join(d, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    with open(osp.join(d, "cat_to_name.json"), "w") as f:
        json.dump({str(i + 1): c for i, c in enumerate(names)}, f)


def write_pets(d):
    trainval, test = [], []
    for i, breed, k in counts(load_list("oxford_pets.txt"), 3):
        species = 1 if breed[0].isupper() else 2  # cats are capitalised
        for j in range(k + 1):
            put(osp.join(d, "images", f"{breed}_{j + 1}.jpg"))
            (trainval if j < k else test).append(f"{breed}_{j + 1} {i + 1} {species} 1")
    write_text(osp.join(d, "annotations", "trainval.txt"), trainval)
    write_text(osp.join(d, "annotations", "test.txt"), test)


def write_cars(d):
    from scipy.io import savemat

    names = load_list("stanford_cars.txt")
    rows = {"cars_train": [], "cars_test": []}
    for i, _, k in counts(names, 3):
        for j in range(k + 1):
            folder = "cars_train" if j < k else "cars_test"
            fname = f"{len(rows[folder]) + 1:05d}.jpg"
            put(osp.join(d, folder, fname))
            rows[folder].append((fname, i + 1))

    def annos(rows):
        rec = np.zeros((1, len(rows)), dtype=[("bbox_x1", "O"), ("class", "O"), ("fname", "O")])
        for n, (fname, label) in enumerate(rows):
            rec[0, n] = (np.array([[1]]), np.array([[label]], dtype=np.uint8), np.array([fname]))
        return {"annotations": rec}

    meta = np.empty((1, len(names)), dtype=object)
    for i, c in enumerate(names):
        meta[0, i] = np.array([c])
    os.makedirs(osp.join(d, "devkit"), exist_ok=True)
    savemat(osp.join(d, "devkit", "cars_meta.mat"), {"class_names": meta})
    savemat(osp.join(d, "devkit", "cars_train_annos.mat"), annos(rows["cars_train"]))
    savemat(osp.join(d, "cars_test_annos_withlabels.mat"), annos(rows["cars_test"]))


def write_sun(d):
    codes = load_list("sun397.txt")
    train, test = [], []
    for _, code, k in counts(codes, 3):
        for j in range(k + 1):
            rel = f"{code}/sun_{j:04d}.jpg"
            put(osp.join(d, "SUN397", rel.lstrip("/")))
            (train if j < k else test).append(rel)
    write_text(osp.join(d, "ClassName.txt"), codes)
    write_text(osp.join(d, "Training_01.txt"), train)
    write_text(osp.join(d, "Testing_01.txt"), test)


def write_ucf(d):
    actions = load_list("ucf101.txt")
    lists = osp.join(d, "ucfTrainTestlist")
    train, test = [], []
    for i, action, k in counts(actions, 3):
        for j in range(k + 1):
            video = f"v_{action}_g{j + 1:02d}_c01"
            put(osp.join(d, "UCF-101-midframes", split_camel_case(action), video + ".jpg"))
            if j < k:
                train.append(f"{action}/{video}.avi {i + 1}")
            else:
                test.append(f"{action}/{video}.avi")
    write_text(osp.join(lists, "classInd.txt"), [f"{i + 1} {a}" for i, a in enumerate(actions)])
    write_text(osp.join(lists, "trainlist01.txt"), train)
    write_text(osp.join(lists, "testlist01.txt"), test)


def imagenet_wnids():
    return [line.split(" ", 1)[0] for line in load_list("imagenet_classnames.txt")]


def write_imagenet(d):
    class_folders(osp.join(d, "images", "train"), imagenet_wnids(), n=2)
    for w in imagenet_wnids():
        put(osp.join(d, "images", "val", w, f"{w}_val.JPEG"))


def one_per_folder(folder, names, data=JPEG):
    for name in names:
        put(osp.join(folder, name, "0.png" if data is PNG else "0.jpg"), data)


WRITERS = {
    "Caltech101": lambda d: class_folders(osp.join(d, "101_ObjectCategories"),
                                          load_list("caltech101.txt")),
    "DTD": lambda d: class_folders(osp.join(d, "images"), load_list("dtd.txt")),
    "EuroSAT": lambda d: class_folders(
        osp.join(d, "2750"), sorted(DATASET_REGISTRY.get("EuroSAT").renames)),
    "FGVCAircraft": write_fgvc,
    "Food101": lambda d: class_folders(osp.join(d, "images"), load_list("food101.txt")),
    "OxfordFlowers": write_flowers,
    "OxfordPets": write_pets,
    "StanfordCars": write_cars,
    "SUN397": write_sun,
    "UCF101": write_ucf,
    "ImageNet": write_imagenet,
    "ImageNetV2": lambda d: one_per_folder(osp.join(d, "imagenetv2-matched-frequency-format-val"),
                                           [str(i) for i in range(1000)], PNG),
    "ImageNetSketch": lambda d: one_per_folder(osp.join(d, "images"), imagenet_wnids()),
    "ImageNetA": lambda d: one_per_folder(osp.join(d, "imagenet-a"),
                                          load_list("imagenet_a_wnids.txt")),
    "ImageNetR": lambda d: one_per_folder(osp.join(d, "imagenet-r"),
                                          load_list("imagenet_r_wnids.txt")),
}

# name: (config file, published class count, {label: expected clean name}, first template)
CASES = {
    "Caltech101": ("caltech101", 100, {0: "face", 1: "leopard", 2: "motorbike", 3: "accordion",
                                       4: "airplane", 81: "sea horse", 99: "yin yang"},
                   "a photo of a {}."),
    "DTD": ("dtd", 47, {0: "banded", 30: "polka-dotted", 46: "zigzagged"}, "{} texture."),
    "EuroSAT": ("eurosat", 10, {0: "annual crop land", 2: "herbaceous vegetation land",
                                9: "sea or lake"}, "a centered satellite photo of {}."),
    "FGVCAircraft": ("fgvc_aircraft", 100, {0: "707-320", 72: "F-16A/B", 73: "F/A-18",
                                            99: "Yak-42"}, "a photo of a {}, a type of aircraft."),
    "Food101": ("food101", 101, {0: "apple pie", 38: "fish and chips", 100: "waffles"},
                "a photo of {}, a type of food."),
    "OxfordFlowers": ("oxford_flowers", 102, {0: "pink primrose", 1: "hard-leaved pocket orchid",
                                              101: "blackberry lily"},
                      "a photo of a {}, a type of flower."),
    "OxfordPets": ("oxford_pets", 37, {0: "abyssinian", 2: "american pit bull terrier",
                                       9: "british shorthair", 36: "yorkshire terrier"},
                   "a photo of a {}, a type of pet."),
    "StanfordCars": ("stanford_cars", 196, {0: "2000 AM General Hummer SUV",
                                            195: "2012 smart fortwo Convertible"},
                     "a photo of a {}."),
    "SUN397": ("sun397", 397, {0: "abbey", 8: "outdoor apartment building",
                               78: "backseat car interior", 396: "youth hostel"},
               "a photo of a {}."),
    "UCF101": ("ucf101", 101, {0: "apply eye makeup", 34: "hammering", 35: "hammer throw",
                               100: "yo yo"}, "a photo of a person doing {}."),
    "ImageNet": ("imagenet", 1000, {0: "tench", 1: "goldfish", 999: "toilet paper"},
                 "a photo of a {}."),
    "ImageNetV2": ("imagenetv2", 1000, {0: "tench", 999: "toilet paper"}, "a photo of a {}."),
    "ImageNetSketch": ("imagenet_sketch", 1000, {0: "tench", 999: "toilet paper"},
                       "a photo of a {}."),
    "ImageNetA": ("imagenet_a", 200, {0: "stingray", 199: "acorn"}, "a photo of a {}."),
    "ImageNetR": ("imagenet_r", 200, {0: "goldfish", 1: "great white shark"}, "a photo of a {}."),
}
MEAN_PER_CLASS = {"Caltech101", "FGVCAircraft", "OxfordFlowers", "OxfordPets"}
TEST_ONLY = {"ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"}


def write_layout(root, name):
    WRITERS[name](osp.join(root, DATASET_REGISTRY.get(name).dataset_dir))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("general"))
    for name in CASES:
        write_layout(root, name)
    return root


def load(root, name, *opts, seed=1):
    cfg = make_cfg(root, f"configs/datasets/{CASES[name][0]}.yaml", None,
                   ["--seed", str(seed), "VERBOSE", "False", *opts])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_dataset(cfg)


def item_keys(items):
    return [(osp.relpath(d.impath), d.label, d.classname) for d in items]


# ---- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_published_classes_in_order_with_clean_names(data_root, name):
    cfg_name, n, spots, template = CASES[name]
    ds = load(data_root, name)
    assert type(ds).__name__ == name
    assert ds.num_classes == n and len(ds.classnames) == n
    assert len(ds.tasks) == 1 and ds.tasks[0].num_classes == n and ds.tasks[0].name == name
    for label, cname in spots.items():
        assert ds.classnames[label] == cname, (label, ds.classnames[label])
    assert all("_" not in c and c == c.strip() for c in ds.classnames)
    dups = {c for c in ds.classnames if ds.classnames.count(c) > 1}
    # CLIP's ImageNet names (kept as published) repeat these two for two wnids each.
    assert dups <= ({"missile", "sunglasses"} if name.startswith("ImageNet") else set())
    assert {d.label for d in ds.train_x + ds.val + ds.test} == set(range(n))
    if name in TEST_ONLY:
        assert not ds.train_x and not ds.val
        assert {d.label for d in ds.test} == set(range(n))
    else:
        assert {d.label for d in ds.train_x} == set(range(n))
        assert {d.label for d in ds.test} >= set(range(n - 1))  # the short class may lack one
        assert all(osp.isfile(d.impath) for d in ds.train_x + ds.val + ds.test)
    task = ds.tasks[0]
    assert task.metric == ("mean_per_class" if name in MEAN_PER_CLASS else "accuracy")
    assert task.templates[0] == template and task.description
    assert DATASET_REGISTRY.get(name).datasets_md_section


def test_caltech_drops_background_and_faces_easy(data_root):
    ds = load(data_root, "Caltech101")
    folders = {osp.basename(osp.dirname(d.impath)) for d in ds.train_x + ds.val + ds.test}
    assert "BACKGROUND_Google" not in folders and "Faces_easy" not in folders
    assert "Faces" in folders and "background google" not in ds.classnames


def test_imagenet_val_is_test_and_shifted_sets_share_names(data_root):
    inet = load(data_root, "ImageNet")
    assert inet.val is inet.test or item_keys(inet.val) == item_keys(inet.test)
    assert len(inet.test) == 1000
    a, r = load(data_root, "ImageNetA"), load(data_root, "ImageNetR")
    wnid_to_name = dict(zip(imagenet_wnids(), inet.classnames))
    for ds, fname in ((a, "imagenet_a_wnids.txt"), (r, "imagenet_r_wnids.txt")):
        wnids = load_list(fname)
        assert wnids == sorted(wnids) and len(set(wnids)) == 200
        assert ds.classnames == [wnid_to_name[w] for w in wnids]
        assert [osp.basename(osp.dirname(d.impath)) for d in ds.test] == wnids
    v2 = load(data_root, "ImageNetV2")
    assert v2.classnames == inet.classnames
    assert [osp.basename(osp.dirname(d.impath)) for d in v2.test] == [str(i) for i in range(1000)]


@pytest.mark.parametrize("name", ["EuroSAT", "OxfordPets", "SUN397", "ImageNetR"])
def test_split_written_once_then_read(tmp_path, name):
    root = str(tmp_path)
    write_layout(root, name)
    split_path = DATASET_REGISTRY.get(name).split_path_in(root)
    first = load(root, name)
    assert osp.isfile(split_path)
    with open(split_path) as f:
        saved = json.load(f)
    second = load(root, name)
    for part in ("train_x", "val", "test"):
        assert item_keys(getattr(first, part)) == item_keys(getattr(second, part))
    with open(split_path) as f:
        assert json.load(f) == saved  # not rewritten
    # The saved file is what gets loaded: an edited entry comes back edited.
    saved["test"][0][0] = "edited.jpg"
    with open(split_path, "w") as f:
        json.dump(saved, f)
    third = load(root, name)
    assert third.test[0].impath.endswith(osp.sep + "edited.jpg")
    assert item_keys(third.test[1:]) == item_keys(first.test[1:])


def test_coop_split_file_is_read_with_raw_names(tmp_path):
    """A split_zhou file as CoOp ships it (raw names) is used, names cleaned."""
    root = str(tmp_path)
    cls = DATASET_REGISTRY.get("EuroSAT")
    image_dir = osp.join(root, "eurosat", "2750")
    os.makedirs(image_dir)
    raw = sorted(cls.renames)
    split = {k: [[f"{c}/{c}_{k}_{j}.jpg", i, c] for i, c in enumerate(raw) for j in range(2)]
             for k in ("train", "val", "test")}
    with open(osp.join(root, "eurosat", "split_zhou_EuroSAT.json"), "w") as f:
        json.dump(split, f)
    ds = load(root, "EuroSAT")
    assert ds.classnames == [cls.renames[c] for c in raw]
    assert len(ds.train_x) == 20 and len(ds.test) == 20
    assert ds.train_x[0].impath == osp.join(image_dir, "AnnualCrop/AnnualCrop_train_0.jpg")
    # CoOp's readable spelling ('Annual Crop Land') maps to the same name.
    split["test"] = [[p, y, cls.renames[c].title()] for p, y, c in split["test"]]
    with open(osp.join(root, "eurosat", "split_zhou_EuroSAT.json"), "w") as f:
        json.dump(split, f)
    assert load(root, "EuroSAT").classnames == ds.classnames


def test_oxford_pets_static_helpers_for_ported_coop_files(tmp_path, data_root):
    ds = load(data_root, "OxfordPets")
    image_dir = osp.join(data_root, "oxford_pets", "images")
    path = str(tmp_path / "split_zhou_OxfordPets.json")
    OxfordPets.save_split(ds.train_x, ds.val, ds.test, path, image_dir)
    train, val, test = OxfordPets.read_split(path, image_dir)
    assert item_keys(train) == item_keys(ds.train_x) and item_keys(test) == item_keys(ds.test)
    with open(path) as f:
        assert json.load(f)["train"][0][0] == osp.relpath(ds.train_x[0].impath, image_dir)
    base_train, base_test = OxfordPets.subsample_classes(train, test, subsample="base")
    assert {d.label for d in base_train} == set(range(19))
    new_train, = OxfordPets.subsample_classes(train, subsample="new")
    assert {d.label for d in new_train} == set(range(18))
    assert new_train[0].classname == ds.classnames[19]


@pytest.mark.parametrize("name", ["Caltech101", "FGVCAircraft", "StanfordCars", "UCF101",
                                  "ImageNet"])
def test_fewshot_k_per_class_short_class_warned_and_stable(data_root, name):
    cfg = make_cfg(data_root, f"configs/datasets/{CASES[name][0]}.yaml", None,
                   ["--seed", "2", "VERBOSE", "False", "DATASET.NUM_SHOTS", "2"])
    cache = osp.join(data_root, DATASET_REGISTRY.get(name).dataset_dir, "split_fewshot",
                     f"{name}_shot_2-seed_2.json")
    if osp.exists(cache):
        os.remove(cache)
    with pytest.warns(UserWarning, match="fewer than 2 images"):
        ds = build_dataset(cfg)
    per_class = DATASET_REGISTRY.get(name).split_dataset_by_label(ds.train_x)
    n = CASES[name][1]
    assert len(per_class) == n
    assert sorted(len(v) for v in per_class.values()) == [1] + [2] * (n - 1)
    assert len(per_class[n - 1]) == 1  # the short class is the last one
    assert osp.isfile(cache)
    os.remove(cache)  # a fresh draw (no cache) gives the same images
    again = load(data_root, name, "DATASET.NUM_SHOTS", "2", seed=2)
    assert item_keys(again.train_x) == item_keys(ds.train_x)
    if name == "ImageNet":
        assert item_keys(again.val) == item_keys(again.test)
    else:
        assert {d.label for d in again.val} <= set(range(n))


@pytest.mark.parametrize("name", list(CASES))
def test_missing_folder_names_path_and_section(tmp_path, name):
    cls = DATASET_REGISTRY.get(name)
    root = str(tmp_path)
    expected = cls.expected_paths(root)
    assert expected[0].startswith(osp.join(root, cls.dataset_dir))
    with pytest.raises(UserError) as err:
        load(root, name)
    msg = str(err.value)
    assert expected[0] in msg and f"section '{cls.datasets_md_section}'" in msg
    assert "\n" not in msg


def test_expected_paths_exist_in_a_full_layout(tmp_path):
    root = str(tmp_path)
    for name in ("OxfordPets", "StanfordCars", "UCF101"):
        write_layout(root, name)
        cls = DATASET_REGISTRY.get(name)
        paths = cls.expected_paths(root)
        assert len(paths) > 1 and all(osp.exists(p) for p in paths), paths
    # Without the split file, the annotation lists are needed: a missing one is named.
    os.remove(osp.join(root, "oxford_pets", "annotations", "test.txt"))
    with pytest.raises(UserError, match="annotations/test.txt"):
        load(root, "OxfordPets")
    # With a split file they are not.
    shutil.rmtree(osp.join(root, "oxford_pets", "annotations"))
    write_layout(root, "OxfordPets")
    load(root, "OxfordPets")
    shutil.rmtree(osp.join(root, "oxford_pets", "annotations"))
    assert all(osp.exists(p) for p in OxfordPets.expected_paths(root))
    assert load(root, "OxfordPets").num_classes == 37


def test_missing_class_folder_and_wrong_class_count(tmp_path):
    root = str(tmp_path)
    write_layout(root, "ImageNetA")
    victim = osp.join(root, "imagenet-adversarial", "imagenet-a",
                      load_list("imagenet_a_wnids.txt")[5])
    shutil.rmtree(victim)
    with pytest.raises(UserError, match="1 of 200 class folders missing") as err:
        load(root, "ImageNetA")
    assert victim in str(err.value)
    write_layout(root, "DTD")
    shutil.rmtree(osp.join(root, "dtd", "images", "zigzagged"))
    with pytest.raises(UserError, match="found 46 classes.*expected 47"):
        load(root, "DTD")


def test_classnames_txt_from_data_root_overrides_shipped(tmp_path):
    root = str(tmp_path)
    write_layout(root, "ImageNetR")
    lines = load_list("imagenet_classnames.txt")
    lines[1] = lines[1].split(" ")[0] + " pet goldfish"
    write_text(osp.join(root, "imagenet", "classnames.txt"), lines)
    ds = load(root, "ImageNetR")
    assert ds.classnames[0] == "pet goldfish"
    write_text(osp.join(root, "imagenet", "classnames.txt"), lines[:10])
    os.remove(DATASET_REGISTRY.get("ImageNetR").split_path_in(root))
    with pytest.raises(UserError, match="lists 10 classes, expected 1000"):
        load(root, "ImageNetR")


def test_datasets_md_has_a_section_per_dataset():
    with open(osp.join(ROOT, "DATASETS.md")) as f:
        titles = {line[3:].strip() for line in f if line.startswith("## ")}
    for name in CASES:
        assert DATASET_REGISTRY.get(name).datasets_md_section in titles, name


def test_upstream_style_adapter_uses_coop_static_helpers(data_root):
    """A dataset file written against CoOp's helpers (OxfordPets.read_split /
    save_split / subsample_classes, DTD.read_and_split_data, ImageNet.read_classnames)
    runs here unchanged apart from the dassl -> toolbox rename."""
    import random

    from datasets.dtd import DescribableTextures
    from datasets.imagenet import ImageNet
    from toolbox.data.datasets import DatasetBase

    class UpstreamCaltech(DatasetBase):
        dataset_dir = "caltech-101"

        def __init__(self, cfg):
            root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
            self.dataset_dir = osp.join(root, self.dataset_dir)
            self.image_dir = osp.join(self.dataset_dir, "101_ObjectCategories")
            self.split_path = osp.join(self.dataset_dir, "split_upstream.json")
            if osp.exists(self.split_path):
                train, val, test = OxfordPets.read_split(self.split_path, self.image_dir)
            else:
                train, val, test = DescribableTextures.read_and_split_data(
                    self.image_dir, ignored=["BACKGROUND_Google", "Faces_easy"],
                    new_cnames={"airplanes": "airplane"})
                OxfordPets.save_split(train, val, test, self.split_path, self.image_dir)
            train = self.generate_fewshot_dataset(train, num_shots=2)
            train, val, test = OxfordPets.subsample_classes(train, val, test, subsample="base")
            super().__init__(train_x=train, val=val, test=test)

    cfg = make_cfg(data_root, "configs/datasets/caltech101.yaml", None, ["VERBOSE", "False"])
    random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = UpstreamCaltech(cfg)
        second = UpstreamCaltech(cfg)  # reads the split it saved
    assert first.num_classes == 50 and first.classnames[4] == "airplane"
    assert item_keys(first.test) == item_keys(second.test)
    assert len(ImageNet.read_classnames(osp.join(ROOT, "datasets", "data",
                                                 "imagenet_classnames.txt"))) == 1000


def test_train_py_evaluates_a_test_only_set(tmp_path):
    """train.py --eval-only on ImageNet-A: the 200-class test set goes through the
    data manager and evaluator into results.json under its own task name."""
    from tests.conftest import run_train

    root, out = str(tmp_path / "data"), str(tmp_path / "out")
    write_layout(root, "ImageNetA")
    run_train("--root", root, "--seed", "1", "--trainer", "ZeroshotCLIP",
              "--dataset-config-file", "configs/datasets/imagenet_a.yaml",
              "--config-file", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
              "--output-dir", out, "--eval-only",
              "MODEL.BACKBONE.NAME", "tiny-vit")  # untrained: no digits pre-training to wait for
    with open(osp.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["dataset"] == "ImageNetA" and len(res["tasks"]) == 1
    task = res["tasks"][0]
    assert task["task"] == "ImageNetA" and task["total"] == 200 and task["metric"] == "accuracy"
    assert list(res["per_class"]["ImageNetA"])[:2] == ["stingray", "goldfinch"]


def test_imagenet_family_split_with_other_class_names_is_an_error(data_root):
    """classnames.txt names the ImageNet classes: a saved split file that names
    one otherwise (made before classnames.txt changed) stops the run with the
    file to delete."""
    import json

    from toolbox.errors import UserError

    name = load(data_root, "ImageNetA").classnames[1]  # the split file exists after a load
    path = DATASET_REGISTRY.get("ImageNetA").split_path_in(data_root)
    with open(path) as f:
        original = f.read()
    split = json.loads(original)
    split["test"] = [[p, y, "old name" if y == 1 else c] for p, y, c in split["test"]]
    try:
        with open(path, "w") as f:
            json.dump(split, f)
        with pytest.raises(UserError, match=f"label 1: 'old name' in the file, '{name}' in "
                                            "the code\\); delete "):
            load(data_root, "ImageNetA")
    finally:
        with open(path, "w") as f:
            f.write(original)
    assert name == "goldfinch" and load(data_root, "ImageNetA").classnames[1] == name
