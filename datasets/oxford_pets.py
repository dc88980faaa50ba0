"""Oxford-IIIT Pets (Parkhi et al., 2012): 37 cat and dog breeds.

Upstream CoOp dataset files call ``OxfordPets.read_split``, ``save_split``,
``split_trainval`` and ``subsample_classes``; they are DatasetBase's static
helpers, so such files work here once 'dassl' is renamed 'toolbox'.
"""
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY, Datum

from .common import CoOpTask, read_lines


@DATASET_REGISTRY.register()
class OxfordPets(CoOpTask):
    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    split_sources = ("annotations/trainval.txt", "annotations/test.txt")
    num_classes_expected = 37
    task_name = "OxfordPets"
    task_description = "which breed of cat or dog the photo shows"
    metric = "mean_per_class"
    templates = ["a photo of a {}, a type of pet.", "a photo of the {}, a type of pet."]
    datasets_md_section = "OxfordPets"

    def read_list(self, fname):
        # Lines: '<Breed_name>_<n> <class id 1..37> <species> <breed id>'.
        items = []
        for line in read_lines(osp.join(self.dataset_dir, "annotations", fname)):
            if line.startswith("#"):
                continue
            imname, label = line.split()[:2]
            breed = imname.rsplit("_", 1)[0].lower()
            items.append(Datum(impath=osp.join(self.image_dir, imname + ".jpg"),
                               label=int(label) - 1, classname=breed))
        return items

    def make_split(self):
        train, val = self.split_trainval(self.read_list("trainval.txt"), 0.2, self.split_rng())
        return train, val, self.read_list("test.txt")
