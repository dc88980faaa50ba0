"""EuroSAT (Helber et al., 2019): 10 land-use classes of Sentinel-2 RGB patches."""
from toolbox.data.datasets import DATASET_REGISTRY

from .common import CoOpTask


@DATASET_REGISTRY.register()
class EuroSAT(CoOpTask):
    dataset_dir = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    # Folder names are CamelCase codes; these are the readable names CoOp uses.
    renames = {
        "AnnualCrop": "annual crop land",
        "Forest": "forest",
        "HerbaceousVegetation": "herbaceous vegetation land",
        "Highway": "highway or road",
        "Industrial": "industrial buildings",
        "Pasture": "pasture land",
        "PermanentCrop": "permanent crop land",
        "Residential": "residential buildings",
        "River": "river",
        "SeaLake": "sea or lake",
    }
    num_classes_expected = 10
    task_name = "EuroSAT"
    task_description = "which kind of land use the satellite photo shows"
    templates = ["a centered satellite photo of {}.", "a centered satellite photo of a {}.",
                 "a centered satellite photo of the {}."]
    datasets_md_section = "EuroSAT"
