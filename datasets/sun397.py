"""SUN397 (Xiao et al., 2010): 397 scene categories, CoOp's partition 01."""
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask, read_lines


@DATASET_REGISTRY.register()
class SUN397(CoOpTask):
    dataset_dir = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    split_sources = ("ClassName.txt", "Training_01.txt", "Testing_01.txt")
    num_classes_expected = 397
    task_name = "SUN397"
    task_description = "which kind of scene the photo shows"
    templates = ["a photo of a {}.", "a photo of the {}."]
    datasets_md_section = "SUN397"

    @staticmethod
    def scene_name(code):
        """'a/apartment_building/outdoor' -> 'outdoor apartment_building' (as CoOp)."""
        return " ".join(code.split("/")[1:][::-1])

    def make_split(self):
        codes = [c.lstrip("/") for c in read_lines(osp.join(self.dataset_dir, "ClassName.txt"))]
        cname2label = {self.scene_name(c): i for i, c in enumerate(codes)}

        def read(fname):  # lines: '/a/abbey/sun_xxx.jpg'
            paths = [line.lstrip("/") for line in read_lines(osp.join(self.dataset_dir, fname))]
            return self.items_from_list(
                [(p, self.scene_name(osp.dirname(p))) for p in paths], cname2label)

        train, val = self.split_trainval(read("Training_01.txt"), 0.2, self.split_rng())
        return train, val, read("Testing_01.txt")
