"""RS-8: eight public remote-sensing scene-classification datasets (203
classes). SoftCPT's RS-8 (208 classes) never listed its members; this choice
and its layouts are documented in DATASETS.md, section 'RS-8'."""
from toolbox.data.datasets import DATASET_REGISTRY

from .class_folders import ClassFolderTask

AERIAL = ["a satellite photo of {}.", "an aerial photo of {}.", "a satellite image of a {}."]


class SceneTask(ClassFolderTask):
    datasets_md_section = "RS-8"
    templates = AERIAL


@DATASET_REGISTRY.register()
class UCMerced(SceneTask):
    """UC Merced Land Use (Yang & Newsam, 2010): 21 classes, 0.3 m aerial tiles."""

    dataset_dir = "ucmerced"
    image_dir = "UCMerced_LandUse/Images"
    class_file = "ucmerced.txt"
    num_classes_expected = 21
    task_description = "which land-use class the aerial photo shows"


@DATASET_REGISTRY.register()
class WHURS19(SceneTask):
    """WHU-RS19 (Xia et al., 2010): 19 scene classes from Google Earth."""

    dataset_dir = "whu_rs19"
    image_dir = "WHU-RS19"
    class_file = "whu_rs19.txt"
    num_classes_expected = 19
    task_description = "which scene the satellite photo shows"


@DATASET_REGISTRY.register()
class RSSCN7(SceneTask):
    """RSSCN7 (Zou et al., 2015): 7 scene classes."""

    dataset_dir = "rsscn7"
    image_dir = "RSSCN7"
    class_file = "rsscn7.txt"
    num_classes_expected = 7
    task_description = "which kind of land cover the aerial photo shows"


@DATASET_REGISTRY.register()
class AID(SceneTask):
    """AID, Aerial Image Dataset (Xia et al., 2017): 30 scene classes."""

    dataset_dir = "aid"
    image_dir = "AID"
    class_file = "aid.txt"
    num_classes_expected = 30
    task_description = "which aerial scene the photo shows"


@DATASET_REGISTRY.register()
class NWPURESISC45(SceneTask):
    """NWPU-RESISC45 (Cheng et al., 2017): 45 scene classes."""

    dataset_dir = "nwpu_resisc45"
    image_dir = "NWPU-RESISC45"
    class_file = "nwpu_resisc45.txt"
    num_classes_expected = 45
    task_description = "which remote-sensing scene the photo shows"


@DATASET_REGISTRY.register()
class PatternNet(SceneTask):
    """PatternNet (Zhou et al., 2018): 38 classes for remote-sensing retrieval."""

    dataset_dir = "patternnet"
    image_dir = "PatternNet/images"
    class_file = "patternnet.txt"
    num_classes_expected = 38
    task_description = "which object or area the high-resolution aerial photo shows"


@DATASET_REGISTRY.register()
class OPTIMAL31(SceneTask):
    """OPTIMAL-31 (Wang et al., 2019): 31 scene classes."""

    dataset_dir = "optimal31"
    image_dir = "OPTIMAL-31/Images"
    class_file = "optimal31.txt"
    num_classes_expected = 31
    task_description = "which scene the aerial photo shows"


@DATASET_REGISTRY.register()
class SIRIWHU(SceneTask):
    """SIRI-WHU Google image set (Zhao et al., 2016): 12 land-use classes."""

    dataset_dir = "siri_whu"
    image_dir = "12class_tif"
    class_file = "siri_whu.txt"
    num_classes_expected = 12
    task_description = "which land-use class the satellite photo shows"
