"""Writers of the Plant-6, RS-8 and Fashion-20 on-disk layouts (tiny real
images, full class lists) and of stub General-10 folders with split files,
shared by the suite and data-check tests."""
import io
import json
import os
import os.path as osp

from PIL import Image

from toolbox.data.datasets import DATASET_REGISTRY

import datasets  # noqa: F401
from datasets.fashion20 import FASHION_TASKS
from datasets.suites import GENERAL10_TASKS, PLANT6_TASKS, RS8_TASKS


def _image_bytes(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (40, 160, 60)).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image_bytes("JPEG")


def put(path, data=JPEG):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def class_folder_task(root, cls, n=6, own_split=(3, 1, 2)):
    """Folder per class as the archive unpacks; ``own_split`` = images per class
    in train/val/test where the dataset ships split folders, else ``n``."""
    image_dir = osp.join(root, cls.dataset_dir, cls.image_dir)
    if cls.split_dirs:
        sizes = dict(zip(("train", "val", "test"), own_split))
        folders = [(osp.join(image_dir, d), sizes[k]) for k, d in cls.split_dirs.items()]
    else:
        folders = [(image_dir, n)]
    for folder, k in folders:
        for raw, _ in cls.class_table:
            for j in range(k):
                put(osp.join(folder, raw, f"img_{j:03d}.jpg"))


def write_plant6(root, **kw):
    for name in PLANT6_TASKS:
        class_folder_task(root, DATASET_REGISTRY.get(name), **kw)


def write_rs8(root, **kw):
    for name in RS8_TASKS:
        class_folder_task(root, DATASET_REGISTRY.get(name), **kw)


# 78 classes: four per task, three for the last two tasks; raw names to be cleaned
FASHION_COUNTS = [4] * 18 + [3] * 2


def fashion_classes():
    return {key: [f"{key.split('_')[0].title()}_Style-{c}" for c in "ABCD"[:n]]
            for (key, *_), n in zip(FASHION_TASKS, FASHION_COUNTS)}


def write_fashion20(root, n=5, header=False, with_ids=False):
    """task_info.csv (two columns, or SoftCPT's id/name/description/classes
    with a header) and images/<task_id>/<class_id>/*.jpg."""
    ddir = osp.join(root, "fashion20")
    lines = ["id\ttask\tdescription\tlabels"] if header else []
    for tid, (key, classes) in enumerate(fashion_classes().items()):
        name = key.replace("_", " ") if with_ids else key
        fields = [str(tid), name, "some description"] if with_ids else [name]
        lines.append("\t".join(fields + [", ".join(classes)]))
        for cid in range(len(classes)):
            for j in range(n):
                put(osp.join(ddir, "images", str(tid), str(cid), f"{j:03d}.jpg"))
    put(osp.join(ddir, "images", "0", ".DS_Store"), b"")  # stray files are not classes
    put(osp.join(ddir, "images", "0", "notes.txt"), b"")
    with open(osp.join(ddir, "task_info.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_split_stub(root, cls, n_classes, per_class=(2, 1, 1)):
    """The folders a task expects plus a split file listing ``n_classes``
    classes whose images are never written (loading must not open them)."""
    for path in cls.expected_paths(root):
        if osp.splitext(path)[1]:
            put(path, b"")
        else:
            os.makedirs(path, exist_ok=True)
    split = {}
    for part, k in zip(("train", "val", "test"), per_class):
        split[part] = [[f"c{label}/{part}_{j}.jpg", label, f"class {label}"]
                       for label in range(n_classes) for j in range(k)]
    path = cls.split_path_in(root)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(split, f)


def write_general10_stubs(root):
    for name in GENERAL10_TASKS:
        cls = DATASET_REGISTRY.get(name)
        write_split_stub(root, cls, cls.num_classes_expected)
