"""ClassFolderTask: a dataset stored as one folder per class, with a fixed class list.

Plant-6 and RS-8 are all of this shape; each is one short subclass naming its
folders, its class-list file and its prompt text. The class list lives in
``datasets/data/<class_file>``, one class a line, ``<folder name>`` or
``<folder name><TAB><readable name>`` (default readable name: the folder name
cleaned, 'Sugar_beet' -> 'sugar beet'). Labels follow the file's order.
Folders on disk are matched to the list ignoring case and punctuation, so
'Oil_Well' and 'oil well' are the same class.
"""
import os
import os.path as osp
import warnings

from toolbox.data.datasets import Datum
from toolbox.data.datasets.task_dataset import (TaskDataset, clean_classname, is_image_file,
                                                raise_empty_class_folder)
from toolbox.errors import UserError
from toolbox.utils import listdir_nohidden

from .common import load_list, squash


def load_class_table(fname):
    """[(folder name, readable name), ...] from ``datasets/data/<fname>``."""
    table = []
    for line in load_list(fname):
        raw, _, readable = line.partition("\t")
        table.append((raw.strip(), readable.strip() or clean_classname(raw)))
    return table


class ClassFolderTask(TaskDataset):
    """Subclasses set ``class_file`` and ``num_classes_expected`` (checked
    against the file at import), and ``split_dirs`` if the dataset ships its
    own split folders under ``image_dir`` (else: seeded 50/20/30 split)."""

    class_file = ""
    split_dirs = {}  # e.g. {"train": "train", "val": "validation", "test": "test"}
    class_table = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.class_file:
            return
        cls.class_table = tuple(load_class_table(cls.class_file))
        keys = [squash(raw) for raw, _ in cls.class_table]
        # A wrong count or two folders with one key is a bug in the shipped list.
        assert len(cls.class_table) == cls.num_classes_expected, (cls.__name__, len(keys))
        assert len(set(keys)) == len(keys), cls.__name__
        if cls.split_dirs:
            assert set(cls.split_dirs) <= {"train", "val", "test"} and "test" in cls.split_dirs
            cls.required = tuple(osp.join(cls.image_dir, d) for d in cls.split_dirs.values())

    def read_items(self):
        return self.read_folder(self.image_dir)

    def make_split(self):
        if not self.split_dirs:
            return super().make_split()
        parts = {k: self.read_folder(osp.join(self.image_dir, d))
                 for k, d in self.split_dirs.items()}
        train, test = parts["train"], parts["test"]
        val = parts.get("val")
        if val is None:  # no val folder: hold out 20% of train per class
            train, val = self.split_trainval(train, p_val=0.2, rng=self.split_rng())
        return train, val, test

    def read_folder(self, folder):
        """Datum for every image in ``folder/<class folder>/``, labelled by the class list."""
        found = {squash(f): f for f in listdir_nohidden(folder, sort=True)
                 if osp.isdir(osp.join(folder, f))}
        known = {squash(raw) for raw, _ in self.class_table}
        extra = sorted(f for k, f in found.items() if k not in known)
        if extra:  # e.g. a nested copy some archives carry; never silently a new class
            warnings.warn(f"{self.name()}: ignoring folder(s) not in the class list in {folder}: "
                          f"{', '.join(extra)}")
        items = []
        for label, (raw, readable) in enumerate(self.class_table):
            fname = found.get(squash(raw))
            if fname is None:
                raise UserError(f"{self.name()}: class folder not found: {osp.join(folder, raw)} "
                                f"(see DATASETS.md, section '{self.datasets_md_section}')")
            cdir = osp.join(folder, fname)
            images = [n for n in sorted(os.listdir(cdir)) if is_image_file(n)]
            if not images:
                raise_empty_class_folder(cdir)
            for imname in images:
                items.append(Datum(impath=osp.join(cdir, imname), label=label,
                                   classname=readable))
        return items

    def code_classnames(self):
        return [readable for _, readable in self.class_table]
