"""ImageNet-Sketch (Wang et al., 2019): test only, sketches of the 1,000 classes."""
from toolbox.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetFamily


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetFamily):
    dataset_dir = "imagenet-sketch"
    image_dir = "images"
    test_only = True
    num_classes_expected = 1000
    task_name = "ImageNetSketch"
    task_description = "which ImageNet category the sketch shows"
    datasets_md_section = "ImageNetSketch"
