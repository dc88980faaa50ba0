"""Datum and DatasetBase (as dassl.data.datasets), with the task data model."""
import hashlib
import math
import os
import os.path as osp
import random
import warnings
from collections import defaultdict

from ...errors import UserError, check_choice
from ...utils import read_json, remove_stale_temp_files, write_json
from ..tasks import TaskInfo


class Datum:
    """One sample: image path, global label, domain, class name and task index."""

    def __init__(self, impath="", label=0, domain=0, classname="", task=0):
        assert isinstance(impath, str)
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname
        self._task = task

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    @property
    def task(self):
        return self._task

    def __repr__(self):
        return (f"Datum(impath={self._impath!r}, label={self._label}, "
                f"classname={self._classname!r}, task={self._task})")


def derive_seed(seed, *keys):
    """A 63-bit seed from (seed, keys): the same on every process and order."""
    text = ":".join([str(seed)] + [str(k) for k in keys])
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16) & ((1 << 63) - 1)


class DatasetBase:
    """A dataset: train_x / train_u / val / test lists of Datum, plus ``tasks``.

    Subclasses describe their single task with the class attributes below;
    multi-task suites pass ``tasks`` explicitly.
    """

    dataset_dir = ""  # folder under DATASET.ROOT
    domains = []
    task_name = None  # defaults to the class name
    task_description = ""
    task_prompt_name = ""  # words for the task in learned task prompts ("" = readable name)
    metric = "accuracy"  # or "mean_per_class"
    templates = ["a photo of a {}."]
    datasets_md_section = ""  # section of DATASETS.md that explains the layout

    def __init__(self, train_x=None, train_u=None, val=None, test=None, tasks=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        source = train_x or test or val or []
        self._num_classes = self.get_num_classes(source)
        self._lab2cname, self._classnames = self.get_lab2cname(
            (train_x or []) + (val or []) + (test or []))
        if tasks is None:
            tasks = [TaskInfo(
                name=self.task_name or type(self).__name__,
                classnames=list(self._classnames),
                description=self.task_description,
                prompt_name=self.task_prompt_name,
                metric=self.metric,
                offset=0,
                templates=list(self.templates),
            )]
        self._tasks = tasks
        if len(tasks) > 1 or tasks[0].num_classes != len(self._classnames):
            # The tasks are the authority on class names and label ranges.
            self._classnames = [c for t in tasks for c in t.classnames]
            self._lab2cname = dict(enumerate(self._classnames))
        self._num_classes = max(self._num_classes, sum(t.num_classes for t in tasks))

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def tasks(self):
        return self._tasks

    @staticmethod
    def get_num_classes(data_source):
        label_set = {item.label for item in data_source}
        return max(label_set) + 1 if label_set else 0

    @staticmethod
    def get_lab2cname(data_source):
        container = {}
        for item in data_source:
            container[item.label] = item.classname
        labels = sorted(container)
        mapping = {label: container[label] for label in labels}
        classnames = [mapping[label] for label in labels]
        return mapping, classnames

    def check_input_domains(self, source_domains, target_domains):
        assert len(source_domains) > 0, "source_domains (list) is empty"
        assert len(target_domains) > 0, "target_domains (list) is empty"
        for domain in list(source_domains) + list(target_domains):
            if domain not in self.domains:
                raise UserError(f"input domain must belong to {self.domains}, but got [{domain}]")

    # ---- few-shot ---------------------------------------------------------------

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False, rng=None):
        """K samples per class from each data source (Dassl's signature).

        ``rng`` (a ``random.Random``) makes the draw independent of the global
        RNG; without it the global ``random`` module is used, as in Dassl. A
        class with fewer than K samples keeps all of them (or repeats them if
        ``repeat``) and is named in a warning.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        rng = rng or random
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset, short = [], []
            for label in sorted(tracker):
                items = tracker[label]
                if len(items) >= num_shots:
                    sampled = rng.sample(items, num_shots)
                else:
                    short.append(f"{items[0].classname} ({len(items)})")
                    sampled = rng.choices(items, k=num_shots) if repeat else list(items)
                dataset.extend(sampled)
            if short:
                warnings.warn(f"{len(short)} class(es) have fewer than {num_shots} images; "
                              f"using what there is: {', '.join(short)}", stacklevel=2)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    def load_or_generate_fewshot(self, train, val, num_shots, seed, cache_dir, image_dir):
        """Few-shot train (K per class) and val (min(K, 4) per class), cached
        as ``cache_dir/<task>_shot_K-seed_S.json`` (tasks may share a folder).

        The draw uses an RNG derived from (seed, task name), so it is the same
        whatever process draws it and whatever other tasks are loaded.
        """
        if num_shots < 1:
            return train, val
        name = self.task_name or type(self).__name__
        fpath = osp.join(cache_dir, f"{name}_shot_{num_shots}-seed_{seed}.json")
        if osp.exists(fpath):
            cached = self._read_fewshot_cache(fpath, name, train, val, image_dir)
            if cached is not None:
                return cached
        train = self.generate_fewshot_dataset(
            train, num_shots=num_shots, rng=random.Random(derive_seed(seed, name, "train")))
        val = self.generate_fewshot_dataset(
            val, num_shots=min(num_shots, 4), rng=random.Random(derive_seed(seed, name, "val")))
        data = {"task": name, "shots": num_shots, "seed": seed,
                "train": self._items_to_json(train, image_dir),
                "val": self._items_to_json(val, image_dir)}
        try:
            remove_stale_temp_files(cache_dir)
            write_json(data, fpath)
        except OSError as e:  # read-only data folder: work on without a cache
            warnings.warn(f"cannot write few-shot cache {fpath} ({e}); continuing without it")
        return train, val

    def _read_fewshot_cache(self, fpath, name, train, val, image_dir):
        """(train, val) from a few-shot cache file, or None (with a warning:
        the caller draws again) when the file is damaged, of the wrong shape,
        of another task, or holds images that are not in the current split
        (e.g. after the split file was made again)."""
        def entries(x):
            return (isinstance(x, list) and all(
                isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                and isinstance(e[1], int) and isinstance(e[2], str) for e in x))
        try:
            split = read_json(fpath)
            if not isinstance(split, dict) or not entries(split.get("train")) \
                    or not entries(split.get("val")):
                problem = "not a few-shot cache (wrong JSON shape)"
            elif split.get("task") != name:
                problem = f"a cache of task {split.get('task')!r}"
            else:
                problem = None
        except (OSError, ValueError) as e:
            problem = f"unreadable ({type(e).__name__})"
        if problem is None:
            out = (self._items_from_json(split["train"], image_dir),
                   self._items_from_json(split["val"], image_dir))
            known = {(d.impath, d.label, d.classname) for d in list(train) + list(val)}
            if all((d.impath, d.label, d.classname) in known for d in out[0] + out[1]):
                return out
            problem = "images or class names that are not in the current split"
        warnings.warn(f"ignoring few-shot cache {fpath}: {problem}; drawing again")
        return None

    # ---- split files (split_zhou_<Name>.json) ------------------------------------------------------

    @staticmethod
    def _items_to_json(items, path_prefix):
        out = []
        for item in items:
            impath = item.impath
            if path_prefix and impath.startswith(path_prefix):
                impath = osp.relpath(impath, path_prefix)
            out.append([impath, int(item.label), item.classname])
        return out

    @staticmethod
    def _items_from_json(items, path_prefix):
        return [Datum(impath=osp.join(path_prefix, impath), label=int(label), classname=cname)
                for impath, label, cname in items]

    @staticmethod
    def save_split(train, val, test, filepath, path_prefix):
        """Write a split file (split_zhou_<Name>.json format) atomically."""
        split = {
            "train": DatasetBase._items_to_json(train, path_prefix),
            "val": DatasetBase._items_to_json(val, path_prefix),
            "test": DatasetBase._items_to_json(test, path_prefix),
            # label -> class name when the split was made: checked against the
            # dataset code on every read (upstream readers ignore this key)
            "classnames": DatasetBase.classnames_by_label(train + val + test),
        }
        big = sum(len(v) for v in split.values()) > 20000  # e.g. ImageNet: compact, 3x faster
        write_json(split, filepath, indent=None if big else 4)
        print(f"Saved split to {filepath}")

    @staticmethod
    def classnames_by_label(items):
        """[name of label 0, name of label 1, ...] (None for a label without items)."""
        names = DatasetBase.get_lab2cname(items)[0]
        return [names.get(i) for i in range(max(names) + 1)] if names else []

    @staticmethod
    def read_split(filepath, path_prefix):
        """Read a ``split_zhou_<Name>.json`` split file."""
        print(f"Reading split from {filepath}")
        try:
            split = read_json(filepath)
            return (DatasetBase._items_from_json(split["train"], path_prefix),
                    DatasetBase._items_from_json(split["val"], path_prefix),
                    DatasetBase._items_from_json(split["test"], path_prefix))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"split file {filepath} is damaged ({type(e).__name__}: {e}); "
                            "delete it to make a new split or download it again") from None

    @staticmethod
    def split_trainval(trainval, p_val=0.2, rng=None):
        """Split per class into train and val (80/20 by default, as the upstream splits)."""
        rng = rng or random
        tracker = defaultdict(list)
        for idx, item in enumerate(trainval):
            tracker[item.label].append(idx)
        train, val = [], []
        for label in sorted(tracker):
            idxs = list(tracker[label])
            n_val = round(len(idxs) * p_val)
            assert n_val > 0 or len(idxs) < 2, f"class {label} too small for a val split"
            rng.shuffle(idxs)
            for n, idx in enumerate(idxs):
                (val if n < n_val else train).append(trainval[idx])
        return train, val

    @staticmethod
    def split_dataset_by_label(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output

    @staticmethod
    def subsample_classes(*args, subsample="all"):
        """Keep the base (first ceil(n/2) labels) or new (the rest) classes,
        relabelled from 0, as upstream base-to-new generalization does."""
        check_choice("DATASET.SUBSAMPLE_CLASSES", subsample, ("all", "base", "new"))
        if subsample == "all":
            return args
        labels = sorted({item.label for item in args[0]})
        m = math.ceil(len(labels) / 2)
        selected = labels[:m] if subsample == "base" else labels[m:]
        relabeler = {y: y_new for y_new, y in enumerate(selected)}
        output = []
        for dataset in args:
            output.append([
                Datum(impath=item.impath, label=relabeler[item.label],
                      classname=item.classname, domain=item.domain, task=item.task)
                for item in dataset if item.label in relabeler
            ])
        return output

    # ---- helpers for adapters -----------------------------------------------------

    @classmethod
    def require_dir(cls, path, what="dataset folder"):
        """Raise a UserError naming ``path`` and the DATASETS.md section if missing."""
        if not osp.isdir(path):
            section = cls.datasets_md_section or (cls.task_name or cls.__name__)
            raise UserError(f"{what} not found: {path} (see DATASETS.md, section '{section}')")
        return path

    @staticmethod
    def dataset_root(cfg):
        return osp.abspath(osp.expanduser(cfg.DATASET.ROOT))

    @staticmethod
    def makedirs_quiet(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            pass
