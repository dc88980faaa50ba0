"""ImageNet-A (Hendrycks et al., 2021): test only, natural adversarial photos of 200 classes."""
from toolbox.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetFamily


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetFamily):
    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"
    wnid_file = "imagenet_a_wnids.txt"
    test_only = True
    num_classes_expected = 200
    task_name = "ImageNetA"
    task_description = "which of 200 ImageNet categories the hard, unusual photo shows"
    datasets_md_section = "ImageNetA"
