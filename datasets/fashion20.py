"""Fashion-20: twenty clothing-attribute tasks (78 classes) sharing one folder.

Layout (DATASETS.md, section 'Fashion-20')::

    $DATA/fashion20/task_info.csv                 tab-separated, one row per task
    $DATA/fashion20/images/<task_id>/<class_id>/*.jpg

A task_info.csv row is ``<task name><TAB><class 0>,<class 1>,...``; a leading
integer column is the task id (else the row order is), and columns between
the name and the class list (a description) are ignored, so the file as
SoftCPT's authors describe it (id, name, description, classes, with a header
line) reads as is. ``class_id`` indexes the row's class list.

Each task is its own registered dataset, generated from the table below.
"""
import os
import os.path as osp

from toolbox.data.datasets import DATASET_REGISTRY, Datum
from toolbox.data.datasets.task_dataset import TaskDataset, clean_classname, is_image_file
from toolbox.errors import UserError
from toolbox.utils import listdir_nohidden

SECTION = "Fashion-20"

# task key in task_info.csv, garment, attribute, one-line description
FASHION_TASKS = [
    ("pants_type", "pants", "pants type", "what type of pants the item is"),
    ("pants_length", "pants", "pants length", "how long the pants are"),
    ("waist_type", "pants", "waist type", "what kind of waist the pants or skirt has"),
    ("collar_type", "top", "collar type", "what kind of collar the top has"),
    ("sleeve_type", "top", "sleeve type", "what kind of sleeves the top has"),
    ("sleeve_length", "top", "sleeve length", "how long the sleeves of the top are"),
    ("top_pattern", "top", "pattern", "which pattern the top is printed or woven with"),
    ("shoe_material", "shoe", "material", "what material the shoe is made of"),
    ("shoe_style", "shoe", "style", "which style of shoe it is"),
    ("heel_shape", "shoe", "heel shape", "what shape the heel of the shoe has"),
    ("heel_thickness", "shoe", "heel thickness", "how thick the heel of the shoe is"),
    ("heel_height", "shoe", "heel height", "how high the heel of the shoe is"),
    ("upper_height", "shoe", "upper height", "how high the upper of the shoe reaches"),
    ("toe_cap_style", "shoe", "toe cap style", "what style of toe cap the shoe has"),
    ("hat_style", "hat", "style", "which style of hat it is"),
    ("socks_length", "socks", "length", "how long the socks are"),
    ("socks_type", "socks", "type", "what type of socks they are"),
    ("skirt_length", "skirt", "length", "how long the skirt is"),
    ("number_of_button_rows", "coat", "number of button rows",
     "how many rows of buttons the garment has"),
    ("underwear_style", "underwear", "style", "which style of underwear it is"),
]
TASK_KEYS = [row[0] for row in FASHION_TASKS]


def task_key(text):
    """'Pants Type' / 'pants-type' -> 'pants_type'."""
    return "_".join(text.strip().lower().replace("-", " ").split())


def read_task_info(path):
    """{task key: (task id, [class names as written])}; one-line UserError if bad."""
    where = f"(see DATASETS.md, section '{SECTION}')"
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"Fashion-20 task file not readable: {path} ({e.strerror}) "
                        f"{where}") from None
    info = {}
    rows = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip() and not ln.startswith("#")]
    for i, (lineno, line) in enumerate(rows):
        fields = [x.strip() for x in line.split("\t")]
        has_id = len(fields) >= 3 and fields[0].isdigit()
        name = fields[1] if has_id else fields[0]
        key = task_key(name)
        if key not in TASK_KEYS:
            if i == 0 and not info:  # a header line
                continue
            raise UserError(f"{path} line {lineno}: expected '<task name><TAB><class,class,...>' "
                            f"with a task name among {', '.join(TASK_KEYS)}, got {line[:60]!r} "
                            f"{where}")
        classes = [c.strip() for c in fields[-1].split(",")] if len(fields) >= 2 else []
        if len(classes) < 2 or not all(classes) or len(set(classes)) != len(classes):
            raise UserError(f"{path} line {lineno}: task '{key}' needs two or more distinct "
                            f"comma-separated class names after a TAB {where}")
        if key in info:
            raise UserError(f"{path} line {lineno}: task '{key}' is listed twice {where}")
        info[key] = (int(fields[0]) if has_id else len(info), classes)
    return info


class FashionTask(TaskDataset):
    """One Fashion-20 attribute task (subclasses are generated below)."""

    dataset_dir = "fashion20"
    image_dir = "images"
    required = ("task_info.csv",)
    metric = "mean_per_class"
    datasets_md_section = SECTION
    key = ""  # the task's name in task_info.csv

    @classmethod
    def task_entry(cls, root):
        """(task id, cleaned class names) of this task from task_info.csv."""
        path = osp.join(root, cls.dataset_dir, "task_info.csv")
        if not osp.isfile(path):
            raise UserError(f"dataset file not found: {path} (see DATASETS.md, "
                            f"section '{SECTION}')")
        info = read_task_info(path)
        if cls.key not in info:
            raise UserError(f"{path} has no row for task '{cls.key}' (see DATASETS.md, "
                            f"section '{SECTION}')")
        task_id, classes = info[cls.key]
        return task_id, [clean_classname(c) for c in classes]

    @classmethod
    def expected_paths(cls, root):
        paths = super().expected_paths(root)
        if osp.isfile(osp.join(root, cls.dataset_dir, "task_info.csv")):
            task_id, _ = cls.task_entry(root)
            paths.append(osp.join(root, cls.dataset_dir, cls.image_dir, str(task_id)))
        return paths

    def __init__(self, cfg):
        self.task_id, self.task_classes = self.task_entry(self.dataset_root(cfg))
        super().__init__(cfg)

    def read_items(self):
        folder = osp.join(self.image_dir, str(self.task_id))
        found = {f for f in listdir_nohidden(folder) if osp.isdir(osp.join(folder, f))}
        extra = sorted(found - {str(i) for i in range(len(self.task_classes))})
        if extra:
            raise UserError(f"{folder} has class folder(s) {', '.join(extra)} but task_info.csv "
                            f"lists {len(self.task_classes)} classes for '{self.key}' (folders "
                            f"0..{len(self.task_classes) - 1}; see DATASETS.md, "
                            f"section '{SECTION}')")
        items = []
        for label, cname in enumerate(self.task_classes):
            cdir = osp.join(folder, str(label))
            if not osp.isdir(cdir):
                raise UserError(f"{self.name()}: class folder not found: {cdir} (class "
                                f"'{cname}'; see DATASETS.md, section '{SECTION}')")
            items += [Datum(impath=osp.join(cdir, f), label=label, classname=cname)
                      for f in sorted(os.listdir(cdir)) if is_image_file(f)]
        return items

    def code_classnames(self):
        # task_info.csv names the classes: a split file made with other names
        # (an edited task_info.csv, or older cleaning code) is an error
        return list(self.task_classes)

    def check_num_classes(self, items):
        labels = {item.label for item in items}
        if labels != set(range(len(self.task_classes))):
            raise UserError(f"{self.name()}: images for {len(labels)} of the "
                            f"{len(self.task_classes)} classes task_info.csv lists; the data or "
                            f"split file {self.split_path} is incomplete (see DATASETS.md, "
                            f"section '{SECTION}')")


def _make_task(key, garment, attribute, description):
    name = "Fashion" + "".join(w.capitalize() for w in key.split("_"))
    cls = type(name, (FashionTask,), {
        "__module__": __name__,
        "__doc__": f"Fashion-20 task '{key}': {description}.",
        "key": key,
        "task_name": name,
        "task_description": description,
        # SoftCPT's task prompt uses the task name alone, as upstream: "pants type"
        "task_prompt_name": key.replace("_", " "),
        "templates": [f"a photo of a {garment} with {attribute} {{}}.",
                      f"a photo of a {{}} {garment}.",
                      f"a product photo of a {garment}, {attribute}: {{}}."],
    })
    return DATASET_REGISTRY.register()(cls)


FASHION20_TASKS = []  # registered names, in the paper's task order
for _row in FASHION_TASKS:
    _cls = _make_task(*_row)
    globals()[_cls.__name__] = _cls
    FASHION20_TASKS.append(_cls.__name__)
