"""TaskDataset: the common shape of a single-task adapter.

An adapter sets ``dataset_dir`` / ``image_dir`` / ``split_file`` and either
``make_split`` or ``read_items``; this class handles the CoOp split file (read
if present, else made once with a seeded RNG and saved), the cached few-shot
draw per (shots, seed) and base/new class subsampling.
"""
import os
import os.path as osp
import random

from ...utils import listdir_nohidden
from .base_dataset import DatasetBase, Datum, derive_seed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image_file(fname):
    return fname.lower().endswith(IMAGE_EXTENSIONS)


def clean_classname(name):
    """'Background_without_leaves' -> 'background without leaves'."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


class TaskDataset(DatasetBase):
    image_dir = ""  # folder under dataset_dir that split paths are relative to
    split_file = ""  # under dataset_dir; default split_<TaskName>.json
    p_trn, p_val = 0.5, 0.2  # used when no split file exists (rest is test)

    def __init__(self, cfg):
        cls = type(self)
        root = self.dataset_root(cfg)
        self.dataset_dir = osp.join(root, cls.dataset_dir)
        self.image_dir = osp.join(self.dataset_dir, cls.image_dir) if cls.image_dir else self.dataset_dir
        self.require_dir(self.image_dir)
        self.split_path = osp.join(self.dataset_dir, cls.split_file or f"split_{self.name()}.json")
        self.split_fewshot_dir = osp.join(self.dataset_dir, "split_fewshot")

        if osp.exists(self.split_path):
            train, val, test = self.read_split(self.split_path, self.image_dir)
        else:
            train, val, test = self.make_split()
            self.save_split(train, val, test, self.split_path, self.image_dir)

        train, val = self.load_or_generate_fewshot(
            train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED, self.split_fewshot_dir, self.image_dir)
        train, val, test = self.subsample_classes(
            train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    @classmethod
    def name(cls):
        return cls.task_name or cls.__name__

    def split_rng(self):
        """RNG for making the saved split: fixed per task, never the run seed."""
        return random.Random(derive_seed(0, self.name(), "split"))

    def make_split(self):
        """Return (train, val, test). Default: split ``read_items()`` per class."""
        return self.split_by_ratio(self.read_items(), self.p_trn, self.p_val, self.split_rng())

    def read_items(self):
        """Every labelled image of the dataset, as Datum (override)."""
        return self.read_class_folders(self.image_dir)

    @staticmethod
    def read_class_folders(folder, classnames=None, ignored=()):
        """One subfolder per class, labelled in sorted folder order.

        ``classnames`` maps a folder name to its readable class name (default:
        ``clean_classname``).
        """
        items = []
        folders = [f for f in listdir_nohidden(folder, sort=True)
                   if osp.isdir(osp.join(folder, f)) and f not in ignored]
        for label, fname in enumerate(folders):
            cname = classnames[fname] if classnames else clean_classname(fname)
            cdir = osp.join(folder, fname)
            for imname in sorted(os.listdir(cdir)):
                if is_image_file(imname):
                    items.append(Datum(impath=osp.join(cdir, imname), label=label, classname=cname))
        return items

    @staticmethod
    def split_by_ratio(items, p_trn, p_val, rng):
        """Per class: a share p_trn for train, p_val for val, the rest for test."""
        by_label = DatasetBase.split_dataset_by_label(items)
        train, val, test = [], [], []
        for label in sorted(by_label):
            group = sorted(by_label[label], key=lambda d: d.impath)
            rng.shuffle(group)
            n = len(group)
            n_trn = max(1, round(n * p_trn)) if n >= 3 else n
            n_val = round(n * p_val) if n >= 3 else 0
            train.extend(group[:n_trn])
            val.extend(group[n_trn:n_trn + n_val])
            test.extend(group[n_trn + n_val:])
        return train, val, test
