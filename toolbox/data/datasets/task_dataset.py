"""TaskDataset: the common shape of a single-task adapter.

An adapter sets ``dataset_dir`` / ``image_dir`` / ``split_file`` and either
``make_split`` or ``read_items``; this class handles the split file (read
if present, else made once with a seeded RNG and saved), the cached few-shot
draw per (shots, seed) and base/new class subsampling.
"""
import os
import os.path as osp
import random
import warnings

from ...errors import UserError
from ...utils import listdir_nohidden
from .base_dataset import DatasetBase, Datum, derive_seed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image_file(fname):
    return fname.lower().endswith(IMAGE_EXTENSIONS)


def clean_classname(name):
    """'Background_without_leaves' -> 'background without leaves'."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).lower()


def raise_empty_class_folder(cdir):
    raise UserError(f"class folder {cdir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); put "
                    "the class's images there, or delete the folder (and the dataset's split "
                    "file) if the class does not belong")


class TaskDataset(DatasetBase):
    image_dir = ""  # folder under dataset_dir that split paths are relative to
    split_file = ""  # under dataset_dir; default split_<TaskName>.json
    p_trn, p_val = 0.5, 0.2  # used when no split file exists (rest is test)
    required = ()  # further paths under dataset_dir that must exist
    split_sources = ()  # paths under dataset_dir that make_split reads (only without a split file)
    num_classes_expected = None  # published class count; a mismatch is a UserError
    test_only = False  # evaluation-only set (e.g. ImageNet-V2): no train/val, no few-shot
    val_is_test = False  # val is the test split (ImageNet in the upstream splits)
    save_made_splits = True  # False: a split made here is not saved (tools/check_data.py)

    def __init__(self, cfg):
        cls = type(self)
        root = self.dataset_root(cfg)
        self.dataset_dir = osp.join(root, cls.dataset_dir)
        self.image_dir = osp.join(self.dataset_dir, cls.image_dir) if cls.image_dir else self.dataset_dir
        self.split_path = cls.split_path_in(root)
        self.split_fewshot_dir = osp.join(self.dataset_dir, "split_fewshot")
        cls.check_paths(root)

        made = not osp.exists(self.split_path)
        if made:
            train, val, test = self.make_split()
        else:
            train, val, test = self.read_split(self.split_path, self.image_dir)
        train, val, test = (self.rename_items(x) for x in (train, val, test))
        if not made:
            self.check_split_classnames(train + val + test, self.split_path)
        self.check_num_classes(train + val + test)
        if made and TaskDataset.save_made_splits:
            try:
                self.save_split(train, val, test, self.split_path, self.image_dir)
            except OSError as e:  # read-only data folder: work on without a cache
                warnings.warn(f"cannot write split file {self.split_path} ({e}); "
                              "continuing without it")

        if cls.test_only:
            train, val = [], []
        else:
            train, val = self.load_or_generate_fewshot(
                train, [] if cls.val_is_test else val, cfg.DATASET.NUM_SHOTS, cfg.SEED,
                self.split_fewshot_dir, self.image_dir)
        if cls.val_is_test:
            val = test
        train, val, test = self.subsample_classes(
            train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)

    @classmethod
    def name(cls):
        return cls.task_name or cls.__name__

    @classmethod
    def split_path_in(cls, root):
        return osp.join(root, cls.dataset_dir, cls.split_file or f"split_{cls.name()}.json")

    @classmethod
    def expected_paths(cls, root):
        """Folders and files this dataset needs under DATA root ``root``.

        The files that only serve to build the split (``split_sources``) are
        listed only while no split file exists.
        """
        ddir = osp.join(root, cls.dataset_dir)
        paths = [osp.join(ddir, cls.image_dir) if cls.image_dir else ddir]
        paths += [osp.join(ddir, p) for p in cls.required]
        if not osp.exists(cls.split_path_in(root)):
            paths += [osp.join(ddir, p) for p in cls.split_sources]
        return paths

    @classmethod
    def check_paths(cls, root):
        """UserError naming the first expected path that is missing."""
        for path in cls.expected_paths(root):
            if not osp.exists(path):
                section = cls.datasets_md_section or cls.name()
                what = "dataset file" if osp.splitext(path)[1] else "dataset folder"
                raise UserError(f"{what} not found: {path} (see DATASETS.md, section '{section}')")

    @classmethod
    def readable(cls, classname):
        """The class name shown to the model (hook; split files store the result)."""
        return classname

    def rename_items(self, items):
        names = {item.classname for item in items}
        mapping = {n: self.readable(n) for n in names}
        if all(k == v for k, v in mapping.items()):
            return items
        return [Datum(impath=d.impath, label=d.label, domain=d.domain,
                      classname=mapping[d.classname], task=d.task) for d in items]

    def code_classnames(self):
        """The class names (by label) the dataset code gives today, or None
        when only reading all the data would tell. Default: the sorted class
        folders of ``image_dir`` when the class uses the default
        ``read_items`` / ``make_split``; subclasses with a class list
        override it."""
        cls = type(self)
        if cls.make_split is not TaskDataset.make_split or \
                cls.read_items is not TaskDataset.read_items or not osp.isdir(self.image_dir):
            return None
        folders = [f for f in listdir_nohidden(self.image_dir, sort=True)
                   if osp.isdir(osp.join(self.image_dir, f))]
        return [self.readable(clean_classname(f)) for f in folders]

    def check_split_classnames(self, items, split_path=None):
        """A split file saved earlier must name the classes as the dataset code
        does now (it keeps the names it was made with). Without a class list
        (an adapter with its own ``read_items`` / ``make_split``), a split file
        this toolbox made (it records "classnames") is checked against what
        ``make_split`` yields now."""
        expected = self.code_classnames()
        if expected is None:
            expected = self._classnames_made_now(split_path)
        if expected is None:
            return
        found = self.classnames_by_label(items)
        if found == list(expected):
            return
        # a label without images in the file (None) names nothing to compare
        diffs = [(i, a, b) for i, (a, b) in enumerate(zip(found, expected))
                 if a is not None and a != b]
        if diffs:
            i, a, b = diffs[0]
            detail = (f"{len(diffs)} class name(s) differ, e.g. label {i}: '{a}' in the file, "
                      f"'{b}' in the code")
        elif len(found) > len(expected):
            detail = f"{len(found)} classes in the file, {len(expected)} in the code"
        else:
            return
        raise UserError(f"{self.name()}: split file {self.split_path} was made by an older "
                        f"version of the dataset code ({detail}); delete {self.split_path} "
                        "(and its few-shot caches are redrawn) to make it again")

    def _classnames_made_now(self, split_path):
        """Class names by label of a split made now (None: not checkable: an upstream
        split file, or the files the split is made from are gone)."""
        from ...utils import read_json

        if not split_path:
            return None
        try:
            recorded = read_json(split_path).get("classnames")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(recorded, list) or any(
                not osp.exists(osp.join(self.dataset_dir, p)) for p in type(self).split_sources):
            return None
        train, val, test = self.make_split()
        return self.classnames_by_label(self.rename_items(train + val + test))

    def check_num_classes(self, items):
        """Labels must be 0..n-1 with n the published class count."""
        labels = {item.label for item in items}
        expected = type(self).num_classes_expected
        if expected is not None and labels != set(range(expected)):
            section = self.datasets_md_section or self.name()
            raise UserError(
                f"{self.name()}: found {len(labels)} classes (labels {min(labels, default=0)}.."
                f"{max(labels, default=-1)}) in {self.dataset_dir}, expected {expected}; the data "
                f"or its split file is incomplete (see DATASETS.md, section '{section}')")

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

        ``classnames`` maps a folder name to its readable class name: a dict or
        a function (default: ``clean_classname``).
        """
        if not classnames:
            name_of = clean_classname
        else:
            name_of = classnames if callable(classnames) else classnames.__getitem__
        items = []
        folders = [f for f in listdir_nohidden(folder, sort=True)
                   if osp.isdir(osp.join(folder, f)) and f not in ignored]
        for label, fname in enumerate(folders):
            cname = name_of(fname)
            cdir = osp.join(folder, fname)
            images = [n for n in sorted(os.listdir(cdir)) if is_image_file(n)]
            if not images:
                raise_empty_class_folder(cdir)
            for imname in images:
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
