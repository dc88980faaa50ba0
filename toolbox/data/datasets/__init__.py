from .base_dataset import Datum, DatasetBase
from .build import DATASET_REGISTRY, build_dataset
