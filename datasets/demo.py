"""Built-in demo: three related tasks on scikit-learn's bundled digits images
(1,797 8x8 scans, shipped inside the scikit-learn package, no download).

The images are written once as 32x32 PNG files under
``$DATA/demo_digits/images/<digit>/``, so the demo goes through the same
file-reading path as every real dataset.
"""
import os
import os.path as osp
import shutil
import tempfile

import numpy as np
from PIL import Image

from toolbox.data.datasets import DATASET_REGISTRY, Datum
from toolbox.data.datasets.multitask import MultiTaskDataset
from toolbox.data.datasets.task_dataset import TaskDataset
from toolbox.utils import current_umask

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SIZE = 32


def ensure_demo_images(dataset_dir):
    """Write the digits as PNG files once (into a temp folder, then renamed,
    so a crash or a concurrent run never leaves a partial image folder)."""
    image_dir = osp.join(dataset_dir, "images")
    if osp.isdir(image_dir):
        return image_dir
    from sklearn.datasets import load_digits

    digits = load_digits()
    os.makedirs(dataset_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".images-", dir=dataset_dir)
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's folder is private (0700)
        for i, (img, y) in enumerate(zip(digits.images, digits.target)):
            cdir = osp.join(tmp, str(int(y)))
            os.makedirs(cdir, exist_ok=True)
            arr = (np.asarray(img) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(arr, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.NEAREST)
            im.convert("RGB").save(osp.join(cdir, f"{i:04d}.png"))
        try:
            os.rename(tmp, image_dir)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return image_dir


class DemoTask(TaskDataset):
    """One view of the digits; subclasses map a digit to a class."""

    dataset_dir = "demo_digits"
    image_dir = "images"
    builds_own_data = True  # writes its images on first use: nothing for a data check to miss
    datasets_md_section = "Demo"
    class_list = []

    def __init__(self, cfg):
        ensure_demo_images(osp.join(self.dataset_root(cfg), self.dataset_dir))
        super().__init__(cfg)

    @staticmethod
    def label_of(digit):
        return digit

    def code_classnames(self):
        return list(self.class_list)

    def read_items(self):
        items = []
        for digit in range(10):
            cdir = osp.join(self.image_dir, str(digit))
            label = self.label_of(digit)
            for fname in sorted(os.listdir(cdir)):
                items.append(Datum(impath=osp.join(cdir, fname), label=label,
                                   classname=self.class_list[label]))
        return items


@DATASET_REGISTRY.register()
class DemoDigit(DemoTask):
    task_name = "DemoDigit"
    task_description = "which digit is written"
    split_file = "split_demo_digit.json"
    class_list = DIGIT_NAMES
    templates = ["a photo of the digit {}.", "a scan of a handwritten {}."]


@DATASET_REGISTRY.register()
class DemoParity(DemoTask):
    task_name = "DemoParity"
    task_description = "whether the written digit is even or odd"
    split_file = "split_demo_parity.json"
    class_list = ["even number", "odd number"]
    templates = ["a photo of an {}.", "a handwritten {}."]

    @staticmethod
    def label_of(digit):
        return digit % 2


@DATASET_REGISTRY.register()
class DemoMagnitude(DemoTask):
    task_name = "DemoMagnitude"
    task_description = "whether the written digit is below five or not"
    split_file = "split_demo_magnitude.json"
    class_list = ["small number", "large number"]
    metric = "mean_per_class"
    templates = ["a photo of a {}.", "a handwritten {}."]

    @staticmethod
    def label_of(digit):
        return int(digit >= 5)


@DATASET_REGISTRY.register()
class Demo(MultiTaskDataset):
    """The three digit tasks trained jointly."""

    members = ["DemoDigit", "DemoParity", "DemoMagnitude"]
