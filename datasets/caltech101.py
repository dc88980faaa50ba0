"""Caltech101 (Fei-Fei et al., 2004): 100 object categories, CoOp's layout."""
from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask


@DATASET_REGISTRY.register()
class Caltech101(CoOpTask):
    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    ignored = ("BACKGROUND_Google", "Faces_easy")  # clutter class and a duplicate of Faces
    renames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard",
               "Motorbikes": "motorbike"}
    num_classes_expected = 100
    task_name = "Caltech101"
    task_description = "which object category the photo shows"
    metric = "mean_per_class"
    templates = ["a photo of a {}.", "a photo of the {}.", "a drawing of a {}."]
    datasets_md_section = "Caltech101"
