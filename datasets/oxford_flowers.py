"""Oxford Flowers 102 (Nilsback & Zisserman, 2008)."""
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY, Datum
from toolbox.utils import read_json

from .common import CoOpTask, load_mat


@DATASET_REGISTRY.register()
class OxfordFlowers(CoOpTask):
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    split_sources = ("imagelabels.mat", "cat_to_name.json")
    keep_case = True  # 'hard-leaved pocket orchid'
    num_classes_expected = 102
    task_name = "OxfordFlowers"
    task_description = "which species of flower the photo shows"
    metric = "mean_per_class"
    templates = ["a photo of a {}, a type of flower.",
                 "a close-up photo of a {}, a type of flower."]
    datasets_md_section = "OxfordFlowers"

    def read_items(self):
        # imagelabels.mat: label (1..102) of image_00001.jpg, image_00002.jpg, ...
        labels = load_mat(osp.join(self.dataset_dir, "imagelabels.mat"), "labels").ravel()
        names = read_json(osp.join(self.dataset_dir, "cat_to_name.json"))
        return [Datum(impath=osp.join(self.image_dir, f"image_{i + 1:05d}.jpg"),
                      label=int(y) - 1, classname=names[str(int(y))])
                for i, y in enumerate(labels)]
