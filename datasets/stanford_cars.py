"""Stanford Cars (Krause et al., 2013): 196 make/model/year classes."""
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY, Datum

from .common import CoOpTask, load_mat


@DATASET_REGISTRY.register()
class StanfordCars(CoOpTask):
    dataset_dir = "stanford_cars"
    image_dir = ""  # split paths are 'cars_train/...' and 'cars_test/...'
    split_file = "split_zhou_StanfordCars.json"
    required = ("cars_train", "cars_test")
    split_sources = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
                     "cars_test_annos_withlabels.mat")
    keep_case = True  # 'BMW M3 Coupe'
    num_classes_expected = 196
    task_name = "StanfordCars"
    task_description = "which make, model and year of car the photo shows"
    templates = ["a photo of a {}.", "a photo of the {}, a type of car.", "a photo of my {}."]
    datasets_md_section = "StanfordCars"

    @classmethod
    def readable(cls, classname):
        # The devkit says 'Acura RL Sedan 2012'; CoOp (and we) put the year first.
        words = super().readable(classname).split(" ")
        if len(words) > 1 and len(words[-1]) == 4 and words[-1].isdigit():
            words = words[-1:] + words[:-1]
        return " ".join(words)

    def read_annos(self, folder, anno_file):
        meta = load_mat(osp.join(self.dataset_dir, "devkit", "cars_meta.mat"), "class_names")
        meta = meta.ravel()
        annos = load_mat(osp.join(self.dataset_dir, anno_file), "annotations").ravel()
        items = []
        for a in annos:
            label = int(a["class"].item()) - 1
            items.append(Datum(impath=osp.join(self.dataset_dir, folder, str(a["fname"].item())),
                               label=label, classname=str(meta[label].item())))
        return items

    def make_split(self):
        trainval = self.read_annos("cars_train", osp.join("devkit", "cars_train_annos.mat"))
        train, val = self.split_trainval(trainval, 0.2, self.split_rng())
        return train, val, self.read_annos("cars_test", "cars_test_annos_withlabels.mat")
