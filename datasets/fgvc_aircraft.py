"""FGVC-Aircraft (Maji et al., 2013): 100 aircraft variants, official train/val/test lists."""
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask, read_lines


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpTask):
    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    # CoOp ships no split file here: the official lists are the split.
    split_sources = ("variants.txt", "images_variant_train.txt", "images_variant_val.txt",
                     "images_variant_test.txt")
    keep_case = True  # '737-200', 'F/A-18'
    num_classes_expected = 100
    task_name = "FGVCAircraft"
    task_description = "which aircraft model variant the photo shows"
    metric = "mean_per_class"
    templates = ["a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."]
    datasets_md_section = "FGVCAircraft"

    def make_split(self):
        classnames = read_lines(osp.join(self.dataset_dir, "variants.txt"))
        cname2label = {c: i for i, c in enumerate(classnames)}

        def read(fname):  # lines: '<image id> <variant, may contain spaces>'
            lines = read_lines(osp.join(self.dataset_dir, fname))
            pairs = [line.split(" ", 1) for line in lines]
            return self.items_from_list([(f"{i}.jpg", c) for i, c in pairs], cname2label)

        return (read("images_variant_train.txt"), read("images_variant_val.txt"),
                read("images_variant_test.txt"))
