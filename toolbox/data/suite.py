"""Is a dataset config a suite (several tasks trained jointly)?

Only ``DATASET.SUITE True`` says so (toolbox/config.py). Dataset configs written
before that key marked a suite with a first line ``# suite...``; such a file is no
longer a suite, and silently getting the single-dataset schedule would be a wrong
result with the right label, so both places that answer the question warn:
``is_suite(path)`` (scripts and the grid runner) and ``warn_suite_flag(cfg)``
(train.py, for a multi-task dataset run without the key).
"""
import os.path as osp
import warnings

from ..errors import UserError, one_line

OLD_MARKER = "# suite"


def _old_marker(path):
    """True when the file's first line is the old ``# suite`` marker."""
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return False
    return first.lstrip().lower().startswith(OLD_MARKER)


def is_suite(path):
    """DATASET.SUITE of the dataset config ``path`` (False for a missing file); a
    file that still carries the old '# suite' marker without the key gets one
    warning saying to add it."""
    if not osp.isfile(path):
        return False
    import yaml

    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML ({one_line(e)}); fix that file") from None
    section = data.get("DATASET") if isinstance(data, dict) else None
    suite = (section or {}).get("SUITE") if isinstance(section, dict) else None
    if suite is None and _old_marker(path):
        warnings.warn(old_marker_message(path), stacklevel=2)
    return bool(suite)


def old_marker_message(path):
    return (f"{path} starts with the old '# suite' marker, which no longer makes it a suite "
            "(it gets the single-dataset schedule): add DATASET.SUITE True to it")


def warn_suite_flag(cfg, dataset_config_file=""):
    """train.py: one warning when a multi-task dataset (a MultiTaskDataset, more than
    one task selected) runs without DATASET.SUITE True, naming the dataset config."""
    if cfg.DATASET.SUITE or not cfg.DATASET.NAME:
        return
    if dataset_config_file and _old_marker(dataset_config_file):
        warnings.warn(old_marker_message(dataset_config_file), stacklevel=2)
        return
    from .datasets import DATASET_REGISTRY
    from .datasets.multitask import MultiTaskDataset

    name = cfg.DATASET.NAME
    cls = DATASET_REGISTRY.get(name) if name in DATASET_REGISTRY else None
    if not (isinstance(cls, type) and issubclass(cls, MultiTaskDataset)):
        return
    if len(cfg.DATASET.TASKS) == 1:  # one task of a suite: not a joint run
        return
    where = dataset_config_file or "its dataset config"
    warnings.warn(f"dataset {cfg.DATASET.NAME} is a multi-task suite but DATASET.SUITE is not "
                  f"True, so scripts give it the single-dataset schedule: add DATASET.SUITE True "
                  f"to {where}", stacklevel=2)
