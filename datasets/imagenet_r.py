"""ImageNet-R (Hendrycks et al., 2021): test only, renditions (art, toys, ...) of 200 classes."""
from toolbox.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetFamily


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetFamily):
    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
    wnid_file = "imagenet_r_wnids.txt"
    test_only = True
    num_classes_expected = 200
    task_name = "ImageNetR"
    task_description = "which of 200 ImageNet categories the rendition (art, toy, ...) shows"
    datasets_md_section = "ImageNetR"
