"""The multi-task suites of SoftCPT: General-10, Plant-6, RS-8, Fashion-20
and all 44 tasks jointly (FewShot44). Members are registered dataset names;
DATASET.TASKS picks a subset by name or 0-based index."""
from toolbox.data.datasets import DATASET_REGISTRY
from toolbox.data.datasets.multitask import MultiTaskDataset

from .fashion20 import FASHION20_TASKS

GENERAL10_TASKS = ["Caltech101", "DTD", "EuroSAT", "FGVCAircraft", "Food101", "OxfordFlowers",
                   "OxfordPets", "StanfordCars", "SUN397", "UCF101"]
PLANT6_TASKS = ["FruitVegetable", "KaggleFlower", "KaggleMushroom", "KaggleVegetable",
                "PlantSeedlingV1", "PlantVillage"]
RS8_TASKS = ["UCMerced", "WHURS19", "RSSCN7", "AID", "NWPURESISC45", "PatternNet", "OPTIMAL31",
             "SIRIWHU"]


@DATASET_REGISTRY.register()
class General10(MultiTaskDataset):
    members = GENERAL10_TASKS


@DATASET_REGISTRY.register()
class Plant6(MultiTaskDataset):
    members = PLANT6_TASKS


@DATASET_REGISTRY.register()
class RS8(MultiTaskDataset):
    members = RS8_TASKS


@DATASET_REGISTRY.register()
class Fashion20(MultiTaskDataset):
    members = FASHION20_TASKS


@DATASET_REGISTRY.register()
class FewShot44(MultiTaskDataset):
    members = GENERAL10_TASKS + PLANT6_TASKS + RS8_TASKS + FASHION20_TASKS
