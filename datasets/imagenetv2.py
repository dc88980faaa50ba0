"""ImageNet-V2 matched-frequency (Recht et al., 2019): test only, folders 0..999."""
from toolbox.data.datasets import DATASET_REGISTRY

from .imagenet import ImageNetFamily


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetFamily):
    dataset_dir = "imagenetv2"
    image_dir = "imagenetv2-matched-frequency-format-val"
    test_only = True
    num_classes_expected = 1000
    task_name = "ImageNetV2"
    task_description = "which ImageNet category the photo shows (new test images)"
    datasets_md_section = "ImageNetV2"

    def make_split(self):
        # Folder i holds class i of ImageNet's sorted wnid order.
        names = list(self.wnid_classnames().values())
        return [], [], self.read_class_dirs(self.image_dir, [str(i) for i in range(1000)], names)
