from ...utils.registry import Registry

DATASET_REGISTRY = Registry("DATASET")


def build_dataset(cfg):
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
