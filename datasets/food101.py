"""Food-101 (Bossard et al., 2014): 101 dishes."""
from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask


@DATASET_REGISTRY.register()
class Food101(CoOpTask):
    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    num_classes_expected = 101
    task_name = "Food101"
    task_description = "which dish the photo shows"
    templates = ["a photo of {}, a type of food.", "a photo of the food {}."]
    datasets_md_section = "Food101"
