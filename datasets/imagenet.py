"""ImageNet (ILSVRC-2012, 1,000 classes) and the base of its shifted test sets.

Class names are CLIP's readable names keyed by WordNet id, in CoOp's
``classnames.txt`` format ('n01440764 tench'). A ``classnames.txt`` in the
dataset's folder or in ``$DATA/imagenet/`` is used when present (data
prepared for CoOp works unchanged); otherwise the copy in ``datasets/data/``.
The item lists are cached as JSON (``split_<Name>.json``) instead of CoOp's
``preprocessed.pkl``.
"""
import os
import os.path as osp
from collections import OrderedDict

from toolbox.data.datasets import DATASET_REGISTRY, Datum
from toolbox.data.datasets.task_dataset import is_image_file
from toolbox.errors import UserError

from .common import DATA_DIR, CoOpTask, load_list, read_lines

CLASSNAMES_FILE = "classnames.txt"


class ImageNetFamily(CoOpTask):
    """Shared by ImageNet, -V2, -Sketch, -A and -R: one folder per class."""

    keep_case = True  # CLIP's names: 'American robin', 'three-toed sloth'
    wnid_file = ""  # datasets/data/ list of this set's class subset ('' = all 1,000)
    templates = ["a photo of a {}.", "a bad photo of a {}.", "a sculpture of a {}.",
                 "a rendition of a {}.", "itap of a {}."]

    @classmethod
    def classnames_path(cls, root):
        """The classnames.txt to use: the set's own, ImageNet's, else the shipped one."""
        for path in (osp.join(root, cls.dataset_dir, CLASSNAMES_FILE),
                     osp.join(root, "imagenet", CLASSNAMES_FILE)):
            if osp.isfile(path):
                return path
        return osp.join(DATA_DIR, "imagenet_classnames.txt")

    @staticmethod
    def read_classnames(text_file):
        """OrderedDict wnid -> class name from 'wnid name' lines (CoOp's helper)."""
        names = OrderedDict()
        for line in read_lines(text_file):
            wnid, _, name = line.partition(" ")
            names[wnid] = name.strip()
        return names

    def wnid_classnames(self):
        """OrderedDict wnid -> class name, for this set's classes in label order."""
        path = self.classnames_path(osp.dirname(self.dataset_dir))
        names = self.read_classnames(path)
        if len(names) != 1000:
            raise UserError(f"{path} lists {len(names)} classes, expected 1000 lines "
                            "'<wnid> <class name>' (see DATASETS.md, section 'ImageNet')")
        if not self.wnid_file:
            return names
        return OrderedDict((w, names[w]) for w in load_list(self.wnid_file))

    def code_classnames(self):
        # classnames.txt names the classes: a split file made with other names is an error
        return [self.readable(n) for n in self.wnid_classnames().values()]

    def read_class_dirs(self, folder, dirnames, classnames):
        """Images in ``folder/<dirname>/`` labelled by position; every class
        folder must exist (the class set is fixed)."""
        missing = [d for d in dirnames if not osp.isdir(osp.join(folder, d))]
        if missing:
            raise UserError(
                f"{len(missing)} of {len(dirnames)} class folders missing in {folder} (first: "
                f"{osp.join(folder, missing[0])}); see DATASETS.md, section "
                f"'{self.datasets_md_section}'")
        items = []
        for label, (dirname, cname) in enumerate(zip(dirnames, classnames)):
            cdir = osp.join(folder, dirname)
            for fname in sorted(os.listdir(cdir)):
                if is_image_file(fname) and not fname.startswith("."):
                    items.append(Datum(impath=osp.join(cdir, fname), label=label, classname=cname))
        return items

    def make_split(self):
        """Test-only sets: every image is a test image."""
        names = self.wnid_classnames()
        return [], [], self.read_class_dirs(self.image_dir, list(names), list(names.values()))


@DATASET_REGISTRY.register()
class ImageNet(ImageNetFamily):
    dataset_dir = "imagenet"
    image_dir = "images"
    required = ("images/train", "images/val")
    num_classes_expected = 1000
    val_is_test = True  # as CoOp: validate on the official val set, which is the test set
    task_name = "ImageNet"
    task_description = "which of the 1,000 ImageNet object categories the photo shows"
    datasets_md_section = "ImageNet"

    def make_split(self):
        names = self.wnid_classnames()
        wnids, cnames = list(names), list(names.values())
        train = self.read_class_dirs(osp.join(self.image_dir, "train"), wnids, cnames)
        test = self.read_class_dirs(osp.join(self.image_dir, "val"), wnids, cnames)
        return train, [], test
