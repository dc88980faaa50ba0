"""DataManager: dataset + loaders (as dassl.data.DataManager)."""
import torch
from tabulate import tabulate
from torch.utils.data import Dataset as TorchDataset

from ..errors import UserError
from ..utils import read_image
from .datasets import build_dataset
from .samplers import BATCH_SAMPLERS, build_sampler
from .transforms import build_transform


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64,
                      n_domain=0, n_ins=2, tfm=None, is_train=True, dataset_wrapper=None):
    if dataset_wrapper is None:
        dataset_wrapper = DatasetWrapper
    dataset = dataset_wrapper(cfg, data_source, transform=tfm, is_train=is_train)
    common = dict(num_workers=cfg.DATALOADER.NUM_WORKERS,
                  pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
                  persistent_workers=False)
    if sampler_type in BATCH_SAMPLERS:
        batch_sampler = BATCH_SAMPLERS[sampler_type](data_source, batch_size,
                                                     drop_last=False)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, **common)
    else:
        sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source,
                                batch_size=batch_size, n_domain=n_domain, n_ins=n_ins)
        # Like Dassl: drop an incomplete last batch in training, unless that
        # would leave no batch at all (few-shot sets can be smaller than a batch).
        drop_last = is_train and len(data_source) >= batch_size
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                             drop_last=drop_last, **common)
    assert len(loader) > 0
    return loader


class DataManager:
    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)
        if not dataset.train_x and not cfg.TEST.NO_TEST and not dataset.test:
            raise UserError(f"dataset {cfg.DATASET.NAME} has no images; check DATASET.ROOT")
        tfm_train = custom_tfm_train or build_transform(cfg, is_train=True)
        tfm_test = custom_tfm_test or build_transform(cfg, is_train=False)

        self.train_loader_x = None
        if dataset.train_x:
            self.train_loader_x = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TRAIN_X.SAMPLER, data_source=dataset.train_x,
                batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                n_domain=cfg.DATALOADER.TRAIN_X.N_DOMAIN, n_ins=cfg.DATALOADER.TRAIN_X.N_INS,
                tfm=tfm_train, is_train=True, dataset_wrapper=dataset_wrapper)
        self.train_loader_u = None
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.val,
                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper)
        self.test_loader = None
        if dataset.test:
            self.test_loader = build_data_loader(
                cfg, sampler_type=cfg.DATALOADER.TEST.SAMPLER, data_source=dataset.test,
                batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        self.tfm_train = tfm_train
        self.tfm_test = tfm_test
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def tasks(self):
        return self.dataset.tasks

    def show_dataset_summary(self, cfg):
        ds = self.dataset
        rows = [["Dataset", cfg.DATASET.NAME], ["# tasks", f"{len(ds.tasks):,}"],
                ["# classes", f"{self.num_classes:,}"],
                ["# train_x", f"{len(ds.train_x or []):,}"],
                ["# val", f"{len(ds.val or []):,}"], ["# test", f"{len(ds.test or []):,}"]]
        print(tabulate(rows))
        if len(ds.tasks) > 1:
            print(tabulate([[i, t.name, t.num_classes, f"[{t.label_range[0]}, {t.label_range[1]})",
                             t.metric] for i, t in enumerate(ds.tasks)],
                           headers=["#", "task", "classes", "labels", "metric"]))


class DatasetWrapper(TorchDataset):
    """Reads an image and returns a dict with img, label, domain, task, impath, index."""

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError("Cannot augment the image {} times because transform is None".format(self.k_tfm))
        self.to_tensor = build_transform(cfg, is_train=False, choices=["normalize"]) \
            if self.return_img0 else None

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "task": item.task,
                  "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is not None:
            if isinstance(self.transform, (list, tuple)):
                for i, tfm in enumerate(self.transform):
                    key = "img" if i == 0 else f"img{i + 1}"
                    output[key] = self._transform_image(tfm, img0)
            else:
                output["img"] = self._transform_image(self.transform, img0)
        else:
            output["img"] = img0
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        imgs = [tfm(img0) for _ in range(self.k_tfm)]
        return imgs[0] if len(imgs) == 1 else imgs
