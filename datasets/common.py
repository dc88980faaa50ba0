"""Pieces shared by the CoOp-style adapters (General-10 and the ImageNet family).

Class lists that never change (ImageNet's class names, the ImageNet-A/-R
subsets, the published class lists used by the tests) live as text files in
``datasets/data/``; annotation lists shipped with a dataset are read with
``read_lines`` so a missing or unreadable file names itself.
"""
import os.path as osp
import re

from toolbox.data.datasets import Datum
from toolbox.data.datasets.task_dataset import TaskDataset, clean_classname
from toolbox.errors import UserError

DATA_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "data")


def load_list(fname):
    """Non-empty lines of ``datasets/data/<fname>``."""
    return read_lines(osp.join(DATA_DIR, fname))


def read_lines(path):
    """Non-empty, stripped lines of a text file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); check the dataset folder "
                        "(see DATASETS.md)") from None


def load_mat(path, key):
    """``scipy.io.loadmat(path)[key]`` with a one-line error for a bad file."""
    from scipy.io import loadmat

    try:
        return loadmat(path)[key]
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read '{key}' from {path} ({type(e).__name__}: {e}); "
                        "download the file again (see DATASETS.md)") from None


def squash(name):
    """Comparison key for class names: 'AnnualCrop' == 'annual_crop'."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def split_camel_case(name):
    """'ApplyEyeMakeup' -> 'Apply_Eye_Makeup' (CoOp's UCF101 folder names)."""
    return "_".join(re.findall(r"[A-Z][^A-Z]*", name)) or name


class CoOpTask(TaskDataset):
    """A single-task adapter whose split files may come from CoOp.

    CoOp's split files store raw names ('sea_horse', 'AnnualCrop'); ``readable``
    turns any of them into the name the model sees, and is idempotent so the
    split files written here read back unchanged.
    """

    renames = {}  # raw class name -> readable name (matched ignoring case and punctuation)
    keep_case = False  # True: names are already readable (keep case and hyphens)
    ignored = ()  # class folders left out (folder-per-class datasets)

    def read_items(self):
        """Folder-per-class datasets: raw folder names, made readable by ``readable``."""
        return self.read_class_folders(self.image_dir, classnames=str, ignored=self.ignored)

    @classmethod
    def readable(cls, classname):
        if cls.renames:
            key = squash(classname)
            for raw, new in cls.renames.items():
                if squash(raw) == key:
                    return new
        if cls.keep_case:
            return " ".join(classname.replace("_", " ").split())
        return clean_classname(classname)

    def items_from_list(self, entries, cname2label, image_dir=None):
        """Datum for (relative image path, class name) pairs; an unknown class
        name is a UserError (the list and the class file disagree)."""
        image_dir = image_dir or self.image_dir
        items = []
        for relpath, cname in entries:
            if cname not in cname2label:
                raise UserError(f"{self.name()}: image {relpath} has class '{cname}', which is "
                                f"not in the class list (see DATASETS.md, section "
                                f"'{self.datasets_md_section}')")
            items.append(Datum(impath=osp.join(image_dir, relpath),
                               label=cname2label[cname], classname=cname))
        return items
