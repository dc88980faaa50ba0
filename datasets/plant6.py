"""Plant-6: six public plant and produce datasets (116 classes), each as
its archive unpacks (one folder per class; see DATASETS.md, section 'Plant-6')."""
from toolbox.data.datasets import DATASET_REGISTRY

from .class_folders import ClassFolderTask

OWN_SPLIT = {"train": "train", "val": "validation", "test": "test"}


class PlantTask(ClassFolderTask):
    datasets_md_section = "Plant-6"


@DATASET_REGISTRY.register()
class FruitVegetable(PlantTask):
    """Kaggle 'Fruits and Vegetables Image Recognition Dataset' (train/validation/test)."""

    dataset_dir = "fruit_vegetable"
    split_dirs = OWN_SPLIT
    class_file = "fruit_vegetable.txt"
    num_classes_expected = 36
    task_description = "which fruit or vegetable the photo shows"
    templates = ["a photo of a {}, a type of fruit or vegetable.", "a photo of a {}.",
                 "a photo of {}, a kind of food."]


@DATASET_REGISTRY.register()
class KaggleFlower(PlantTask):
    """Kaggle 'Flowers Recognition' (flowers/<daisy|dandelion|rose|sunflower|tulip>)."""

    dataset_dir = "kaggle_flower"
    image_dir = "flowers"
    class_file = "kaggle_flower.txt"
    num_classes_expected = 5
    task_description = "which kind of flower the photo shows"
    templates = ["a photo of a {}, a type of flower.", "a close-up photo of a {} flower."]


@DATASET_REGISTRY.register()
class KaggleMushroom(PlantTask):
    """Kaggle 'Mushrooms classification - Common genus's images' (Mushrooms/<Genus>)."""

    dataset_dir = "kaggle_mushroom"
    image_dir = "Mushrooms"
    class_file = "kaggle_mushroom.txt"
    num_classes_expected = 9
    task_description = "which genus the mushroom in the photo belongs to"
    templates = ["a photo of a {} mushroom, a type of fungus.", "a photo of {}, a mushroom genus."]


@DATASET_REGISTRY.register()
class KaggleVegetable(PlantTask):
    """Kaggle 'Vegetable Image Dataset' (Vegetable Images/train|validation|test)."""

    dataset_dir = "kaggle_vegetable"
    image_dir = "Vegetable Images"
    split_dirs = OWN_SPLIT
    class_file = "kaggle_vegetable.txt"
    num_classes_expected = 15
    task_description = "which vegetable the photo shows"
    templates = ["a photo of a {}, a type of vegetable.", "a photo of {}, a kind of food."]


@DATASET_REGISTRY.register()
class PlantSeedlingV1(PlantTask):
    """Aarhus University Plant Seedlings Dataset V1, non-segmented images."""

    dataset_dir = "plant_seedling_v1"
    image_dir = "Nonsegmented"
    class_file = "plant_seedling_v1.txt"
    num_classes_expected = 12
    task_description = "which plant species the seedling in the photo is"
    templates = ["a photo of a {} seedling, a type of plant.",
                 "a top-down photo of a young {} plant."]


@DATASET_REGISTRY.register()
class PlantVillage(PlantTask):
    """PlantVillage leaf images without augmentation (38 crop/disease classes + background)."""

    dataset_dir = "plant_village"
    image_dir = "Plant_leave_diseases_dataset_without_augmentation"
    class_file = "plant_village.txt"
    num_classes_expected = 39
    task_description = "which crop and leaf disease the photo shows"
    templates = ["a photo of a leaf with {}, a type of plant disease.", "a photo of {}.",
                 "a close-up photo of a plant leaf: {}."]
