"""Describable Textures (Cimpoi et al., 2014): 47 texture attributes."""
import random

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

    @staticmethod
    def read_and_split_data(image_dir, p_trn=0.5, p_val=0.2, ignored=(), new_cnames=None, rng=None):
        """CoOp's helper, for ported upstream files: class folders, split per
        class into train/val/test (global ``random`` unless ``rng`` is given)."""
        new_cnames = new_cnames or {}
        items = DTD.read_class_folders(image_dir, classnames=lambda f: new_cnames.get(f, f),
                                       ignored=tuple(ignored))
        return DTD.split_by_ratio(items, p_trn, p_val, rng or random)


DescribableTextures = DTD  # CoOp's class name, imported by upstream dataset files
