"""Describable Textures (Cimpoi et al., 2014): 47 texture attributes."""
from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask


@DATASET_REGISTRY.register()
class DTD(CoOpTask):
    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"  # CoOp's name for this dataset
    keep_case = True  # "polka-dotted"
    num_classes_expected = 47
    task_name = "DTD"
    task_description = "which texture the surface has"
    templates = ["{} texture.", "a photo of a {} texture.", "a photo of a {} pattern."]
    datasets_md_section = "DTD"
