"""Is the data a config needs on disk? One check for tools/check_data.py and train.py.

Only looks at paths (``expected_paths`` of each task, and the split file a
first run would build), so it is instant and writes nothing: a missing dataset is reported with the exact path it needs
and the DATASETS.md section that explains the layout.
"""
import os.path as osp
from dataclasses import dataclass, field

from ...errors import UserError
from .build import DATASET_REGISTRY
from .multitask import MultiTaskDataset, select_tasks


@dataclass
class TaskCheck:
    name: str
    cls: type
    section: str
    missing: list = field(default_factory=list)  # expected paths not on disk
    error: str = ""  # a UserError met while listing the paths (e.g. a malformed task file)
    optional: list = field(default_factory=list)  # absent files a first run builds (split file)
    split_file: str = ""  # the split file that, when present, replaces the split sources
    split_sources: list = field(default_factory=list)  # paths only needed without it

    @property
    def ok(self):
        return not self.missing and not self.error

    def message(self):
        """One line naming the problem and where to read about the fix."""
        if self.error:
            return self.error
        path = self.missing[0]
        what = "dataset file" if osp.splitext(path)[1] else "dataset folder"
        return f"{what} not found: {path} (see DATASETS.md, section '{self.section}')"


def task_classes(cfg):
    """The registered task classes DATASET.NAME (and DATASET.TASKS) stand for."""
    cls = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if isinstance(cls, type) and issubclass(cls, MultiTaskDataset):
        return [DATASET_REGISTRY.get(n) for n in select_tasks(cls.members, list(cfg.DATASET.TASKS))]
    return [cls]


def check_task(cls, root):
    name = cls.name() if hasattr(cls, "name") else (cls.task_name or cls.__name__)
    section = getattr(cls, "datasets_md_section", "") or name
    result = TaskCheck(name=name, cls=cls, section=section)
    if getattr(cls, "builds_own_data", False) or not hasattr(cls, "expected_paths"):
        return result
    try:
        paths = cls.expected_paths(root)
    except UserError as e:
        result.error = str(e)
        return result
    result.missing = [p for p in paths if not osp.exists(p)]
    split = cls.split_path_in(root) if hasattr(cls, "split_path_in") else ""
    if split and not osp.exists(split):
        result.optional = [split]
        result.split_file = split
        ddir = osp.join(root, getattr(cls, "dataset_dir", ""))
        result.split_sources = [osp.join(ddir, p) for p in getattr(cls, "split_sources", ())]
    return result


def check_data(cfg):
    """A TaskCheck per task of the configured dataset, in suite order."""
    root = osp.abspath(osp.expanduser(cfg.DATASET.ROOT))
    return [check_task(cls, root) for cls in task_classes(cfg)]


def require_data(cfg):
    """UserError naming the first missing path (and how many tasks lack data)."""
    bad = [c for c in check_data(cfg) if not c.ok]
    if bad:
        more = (f"; {len(bad) - 1} more task(s) lack data, run tools/check_data.py --root "
                f"{cfg.DATASET.ROOT} for the full list" if len(bad) > 1 else "")
        raise UserError(f"{bad[0].name}: {bad[0].message()}{more}")
