"""Trainer lifecycle (as dassl.engine.trainer).

A method overrides a few hooks: ``build_model``, ``forward_backward``,
``parse_batch_train`` and ``model_inference``. This module does the rest:
epochs, logging, TensorBoard, atomic checkpoints with RNG state (so a resumed
run continues exactly), best-val selection and per-task results.json.
"""
import datetime
import math
import os.path as osp
import time
from collections import OrderedDict

import numpy as np
import torch

from ..config import canonical_backbone, config_digest
from ..data import DataManager
from ..errors import UserError
from ..evaluation import build_evaluator
from ..evaluation.evaluator import nan_accuracy_message
from . import distributed as ddp
from ..run_folder import (ALL_IMAGES, remove_temp_files, results_shots,  # noqa: F401
                          saved_backbone, shots_text, write_results)
from ..utils import (AverageMeter, MetricMeter, get_rng_state, load_checkpoint,
                     mkdir_if_missing, progress, prune_checkpoints, save_checkpoint,
                     set_rng_state)


class TrainerBase:
    """Model registry, checkpoints and the epoch loop."""

    # True for a trainer that never looks at training images (zero-shot CLIP): for it
    # DATASET.NUM_SHOTS 0 means zero-shot, for the others every training image
    zero_shot = False

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None

    def register_model(self, name="model", model=None, optim=None, sched=None):
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if self.__dict__.get("_optims") is None:
            raise AttributeError("Cannot assign optim before super().__init__() call")
        if self.__dict__.get("_scheds") is None:
            raise AttributeError("Cannot assign sched before super().__init__() call")
        assert name not in self._models, "Found duplicate model names"
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        names_real = list(self._models.keys())
        if names is not None:
            names = [names] if not isinstance(names, list) else names
            for name in names:
                assert name in names_real
            return names
        return names_real

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        if not ddp.is_main_process():
            return  # DDP: only rank 0 writes (every rank holds the same state)
        names = self.get_model_names()
        rng_state = get_rng_state()
        extra = self.training_state()
        for name in names:
            model_dict = self._models[name].state_dict()
            optim_dict = self._optims[name].state_dict() if self._optims[name] is not None else None
            sched_dict = self._scheds[name].state_dict() if self._scheds[name] is not None else None
            state = {"state_dict": model_dict, "epoch": epoch + 1, "val_result": val_result,
                     "rng_state": rng_state,
                     # so a resumed best_val run compares against the best so far
                     "best_result": float(getattr(self, "best_result", float("-inf")))}
            if optim_dict is not None:
                state["optimizer"] = optim_dict
            if sched_dict is not None:
                state["scheduler"] = sched_dict
            if extra is not None:
                state["training_state"] = extra
            scaler = getattr(self, "scaler", None)
            if scaler is not None:  # fp16 on CUDA: the loss scale is part of the run's state
                state["scaler"] = scaler.state_dict()
            cfg = getattr(self, "cfg", None)
            if cfg is not None:  # what wrote it: checked on --resume and --eval-only
                state.update(trainer=cfg.TRAINER.NAME, config_digest=config_digest(cfg),
                             config=cfg.dump())
            save_checkpoint(state, osp.join(directory, name), is_best=is_best,
                            model_name=model_name)
        keep = self.cfg.TRAIN.CHECKPOINT_KEEP if hasattr(self, "cfg") else 0
        if keep > 0 and not model_name:  # after every model is saved (see resume)
            for name in names:
                prune_checkpoints(osp.join(directory, name), keep)

    def training_state(self):
        """State beyond weights, optimizers, schedulers and RNG that exact
        resumption needs (e.g. running statistics kept outside the saved
        models); plain tensors and containers. None: nothing."""
        return None

    def load_training_state(self, state):
        """Restore what ``training_state`` returned (called on resume)."""

    def resume_model_if_exist(self, directory):
        names = self.get_model_names()
        if not all(osp.exists(osp.join(directory, n, "checkpoint")) for n in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        files = {}
        for name in names:
            with open(osp.join(directory, name, "checkpoint")) as f:
                files[name] = f.readline().strip()
        # A crash between saving two models leaves their pointers one epoch
        # apart: resume all of them from the older, common epoch.
        epochs = {n: int(f.rsplit("-", 1)[1]) for n, f in files.items()
                  if f.startswith("model.pth.tar-") and f.rsplit("-", 1)[1].isdigit()}
        if len(epochs) == len(names) and len(set(epochs.values())) > 1:
            common = min(epochs.values())
            files = {n: f"model.pth.tar-{common}" for n in names}
            print(f"Checkpoints of {', '.join(names)} are from different epochs; "
                  f"resuming all from epoch {common}")
        start_epoch = 0
        for name in names:
            fname = files[name]
            path = osp.join(directory, name, fname)
            ckpt = load_checkpoint(path)
            self.load_weights(name, ckpt, path)
            try:
                if self._optims[name] is not None and "optimizer" in ckpt:
                    self._optims[name].load_state_dict(ckpt["optimizer"])
                if self._scheds[name] is not None and "scheduler" in ckpt:
                    self._scheds[name].load_state_dict(ckpt["scheduler"])
            except (ValueError, KeyError, RuntimeError, TypeError) as e:
                raise UserError(f"cannot resume from {path}: its optimizer state does not fit "
                                f"this run's optimizer ({type(e).__name__}); resume with the "
                                "config it was trained with, or train into a new --output-dir"
                                ) from None
            scaler = getattr(self, "scaler", None)
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            start_epoch = ckpt["epoch"]
            if ckpt.get("rng_state") is not None:
                set_rng_state(ckpt["rng_state"])
            if ckpt.get("best_result") is not None:
                self.best_result = ckpt["best_result"]
            if ckpt.get("training_state") is not None:
                self.load_training_state(ckpt["training_state"])
            print(f"Loaded {name} from {fname}, resuming at epoch {start_epoch + 1}")
        self.model_epoch = start_epoch
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Load weights saved by ``save_model``: epoch N, else the best-val
        model where one was saved, else the latest checkpoint."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        names = self.get_model_names()
        for name in names:
            mdir = osp.join(directory, name)
            if epoch is not None:
                model_file = "model.pth.tar-" + str(epoch)
            elif osp.exists(osp.join(mdir, "model-best.pth.tar")):
                model_file = "model-best.pth.tar"
            elif osp.exists(osp.join(mdir, "checkpoint")):
                with open(osp.join(mdir, "checkpoint")) as f:
                    model_file = f.readline().strip()
            else:
                raise UserError(f"no saved model in {mdir}; check --model-dir (it should hold "
                                f"the folder '{name}' written by training)")
            model_path = osp.join(mdir, model_file)
            if not osp.exists(model_path):
                raise UserError(f"model file not found: {model_path}; check --model-dir and "
                                "--load-epoch")
            ckpt = load_checkpoint(model_path)
            print(f"Loading weights to {name} from {model_path} (epoch = {ckpt['epoch']})")
            self.load_weights(name, ckpt, model_path)
            self.model_epoch = ckpt["epoch"]

    def load_weights(self, name, ckpt, path):
        """Load a checkpoint's weights into model ``name``, strictly: a
        checkpoint of another trainer, or whose keys or shapes differ from the
        model's, is a UserError naming both sides."""
        cfg = getattr(self, "cfg", None)
        mine = cfg.TRAINER.NAME if cfg is not None else type(self).__name__
        theirs = ckpt.get("trainer")
        if theirs and theirs != mine:
            raise UserError(f"{path} was saved by trainer {theirs}, but this run's trainer is "
                            f"{mine}; load it with --trainer {theirs} and the config it was "
                            f"trained with, or point --model-dir/--resume at a {mine} run")
        theirs_bb, mine_bb = saved_backbone(ckpt), (canonical_backbone(cfg) if cfg else None)
        if theirs_bb and mine_bb and theirs_bb != mine_bb:
            # prompts live in one text encoder's embedding space: same shapes, meaningless
            raise UserError(f"{path} was trained on backbone {theirs_bb}, but this run's backbone "
                            f"is {mine_bb}; evaluate it with MODEL.BACKBONE.NAME {theirs_bb} (its "
                            f"trainer config), or point --model-dir/--resume at a {mine_bb} run")
        state = ckpt.get("state_dict")
        if not isinstance(state, dict):
            raise UserError(f"{path} holds no state_dict; it is not a checkpoint written by "
                            "train.py: delete it and retrain")
        model = self._models[name].state_dict()
        missing = [k for k in model if k not in state]
        unexpected = [k for k in state if k not in model]
        shapes = [f"{k} {tuple(state[k].shape)} in the checkpoint, {tuple(model[k].shape)} in "
                  f"the model" for k in model
                  if k in state and hasattr(state[k], "shape") and state[k].shape != model[k].shape]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing in the checkpoint: {', '.join(missing[:5])}")
            if unexpected:
                parts.append(f"not in the model: {', '.join(unexpected[:5])}")
            if shapes:
                parts.append("other shapes: " + "; ".join(shapes[:3]))
            written = f"trainer {theirs}" if theirs else "an unknown trainer"
            raise UserError(f"checkpoint {path} ({written}) does not fit this {mine} model "
                            f"'{name}' ({'; '.join(parts)}); load it with the trainer and config "
                            "it was trained with")
        self._models[name].load_state_dict(state, strict=True)

    def set_model_mode(self, mode="train", names=None):
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(mode)

    def update_lr(self, names=None):
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")

    def init_writer(self, log_dir):
        if not ddp.is_main_process():
            return
        if self.__dict__.get("_writer") is None or self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                print("Note: tensorboard is not installed; no TensorBoard scalars")
                return
            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()

    def write_scalar(self, tag, scalar_value, global_step=None):
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch, max_epoch):
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise TypeError(f"{type(self).__name__} must implement run_epoch()")

    def test(self):
        raise TypeError(f"{type(self).__name__} must implement test()")

    def parse_batch_train(self, batch):
        raise TypeError(f"{type(self).__name__} must implement parse_batch_train()")

    def parse_batch_test(self, batch):
        raise TypeError(f"{type(self).__name__} must implement parse_batch_test()")

    def forward_backward(self, batch):
        raise TypeError(f"{type(self).__name__} must implement forward_backward()")

    def model_inference(self, input):
        raise TypeError(f"{type(self).__name__} must implement model_inference()")

    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        self.ddp_weighted(loss).backward()

    def ddp_weighted(self, loss):
        """DDP: the loss weighted by this rank's share of the global batch, to
        back-propagate (the gradients are then summed over ranks as they are); in
        one process the loss itself. Back-propagating through features gathered from
        other ranks (ClipTrainer.split_over_ranks) needs this weighting."""
        if not ddp.is_distributed():
            return loss
        self._loss_weighted = True
        return ddp.weighted_loss(loss, getattr(self, "grad_weight", 1.0))

    def sync_gradients(self, names=None):
        """DDP: sum the gradients over ranks, each rank's weighted by its share of
        the global batch unless its loss already was (``ddp_weighted``; the case of
        every backward of the toolbox's trainers) (toolbox/engine/distributed.py);
        nothing in one process."""
        if not ddp.is_distributed():
            return
        params = [p for name in self.get_model_names(names) if self._optims[name] is not None
                  for g in self._optims[name].param_groups for p in g["params"]]
        weighted, self._loss_weighted = getattr(self, "_loss_weighted", False), False
        ddp.all_reduce_gradients(params, 1.0 if weighted else getattr(self, "grad_weight", 1.0))

    def model_update(self, names=None):
        self.sync_gradients(names)
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss, names=None):
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
    """Builds data, model and evaluator from a config; trains and tests."""

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        if torch.cuda.is_available() and cfg.USE_CUDA:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
        self.start_epoch = self.epoch = 0
        self.model_epoch = 0  # training epochs of the weights in the model (results.json)
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        self.build_model()
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname, tasks=self.tasks)
        self.best_result = -np.inf
        self.current_task = None

    def check_cfg(self, cfg):
        if cfg.TEST.FINAL_MODEL not in ("last_step", "best_val"):
            raise UserError(f"TEST.FINAL_MODEL must be last_step or best_val, "
                            f"got '{cfg.TEST.FINAL_MODEL}'")

    def build_data_loader(self):
        dm = DataManager(self.cfg)
        # DDP: this rank's share of every global batch, in the single-process order
        self.train_loader_x = ddp.shard_train_loader(dm.train_loader_x)
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.tasks = dm.dataset.tasks
        self.dm = dm

    def build_model(self):
        raise TypeError(f"{type(self).__name__} must implement build_model()")

    def train(self):
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self):
        directory = self.cfg.OUTPUT_DIR
        if self.cfg.RESUME:
            directory = self.cfg.RESUME
        remove_temp_files(self.output_dir)  # a crashed run's half-written files
        self.start_epoch = self.resume_model_if_exist(directory)
        writer_dir = osp.join(self.output_dir, "tensorboard")
        mkdir_if_missing(writer_dir)
        self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_train(self):
        print("Finish training")
        do_test = not self.cfg.TEST.NO_TEST
        if do_test:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                ddp.barrier()  # rank 0 has written it
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = round(time.time() - self.time_start)
        print(f"Elapsed: {datetime.timedelta(seconds=elapsed)}")
        self.close_writer()

    def after_epoch(self):
        self.model_epoch = self.epoch + 1
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        meet_checkpoint_freq = ((self.epoch + 1) % self.cfg.TRAIN.CHECKPOINT_FREQ == 0
                                if self.cfg.TRAIN.CHECKPOINT_FREQ > 0 else False)
        if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            is_best = curr_result > self.best_result
            if is_best:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result,
                                model_name="model-best.pth.tar")
        # Saved last, so the RNG state stored is the one the next epoch starts from.
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` (TEST.SPLIT by default); the test split also
        writes ``<output_dir>/results.json``."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        if data_loader is None:
            raise UserError(f"dataset {self.cfg.DATASET.NAME} has no {split} images to evaluate")
        print(f"Evaluate on the *{split}* set")
        if ddp.is_distributed():
            self._test_sharded(data_loader)
        else:
            for batch in progress(data_loader, f"evaluate {split}"):
                input, label = self.parse_batch_test(batch)[:2]
                task = batch.get("task")
                self.current_task = task  # for instance-conditional multi-task models
                output = self.model_inference(input)
                self.evaluator.process(output, label, task)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        if split == "test":
            self.write_results(results)
        return list(results.values())[0]

    def _test_sharded(self, data_loader):
        """DDP evaluation: rank r runs batches r, r + N, ...; the outputs of all ranks
        are gathered and evaluated in the single-process batch order on every rank."""
        mine = []
        for index, batch in ddp.shard_eval_batches(data_loader):
            input, label = self.parse_batch_test(batch)[:2]
            task = batch.get("task")
            self.current_task = task
            output = self.model_inference(input)
            mine.append((index, output.float().cpu(), label.cpu(),
                         None if task is None else task.cpu()))
        everything = sorted((x for part in ddp.gather_objects(mine) for x in part),
                            key=lambda x: x[0])
        for _, output, label, task in everything:
            self.evaluator.process(output, label, task)

    def write_results(self, results):
        """Machine-readable results beside log.txt (tables and plots read these)."""
        if not ddp.is_main_process():
            return
        cfg = self.cfg
        per_task = [{k: v for k, v in r.items() if k != "per_class"}
                    for r in self.evaluator.per_task]
        bad = [r["task"] for r in per_task if not math.isfinite(float(r["value"]))]
        if bad or not math.isfinite(float(results["accuracy"])):
            # never a results.json that tables would show as 'nan ± nan'
            raise UserError(nan_accuracy_message(bad))
        out = OrderedDict(
            dataset=cfg.DATASET.NAME, trainer=cfg.TRAINER.NAME,
            backbone=canonical_backbone(cfg),  # canonical (NAME holds clip's spelling)
            # OpenCLIP weights tag ("random" for seeded random weights) and checkpoint file;
            # the output folder is <backbone>[@<tag>]_<schedule> (tools/grid.py)
            backbone_pretrained=str(cfg.MODEL.BACKBONE.PRETRAINED or ""),
            backbone_path=cfg.MODEL.BACKBONE.PATH,
            # NUM_SHOTS 0 is every training image (-1, ALL_IMAGES) for a trained model;
            # 0 means zero-shot only for a trainer that never sees a training image
            shots=results_shots(cfg.DATASET.NUM_SHOTS, self.zero_shot), seed=cfg.SEED,
            subsample_classes=cfg.DATASET.SUBSAMPLE_CLASSES, split="test",
            epoch=getattr(self, "model_epoch", None),  # of the weights tested
            overall=results["accuracy"], overall_is="unweighted mean of per-task metrics",
            tasks=per_task,
            per_class={r["task"]: r["per_class"] for r in self.evaluator.per_task},
            config_digest=config_digest(cfg),
            time=datetime.datetime.now().isoformat(timespec="seconds"),
        )
        variant = getattr(self, "results_extra", None)
        if callable(variant):
            out.update(variant())
        write_results(self.output_dir, out)

    def parse_batch_test(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        return input, label

    def get_current_lr(self, names=None):
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]

    def model_inference(self, input):
        return self.model(input)


class TrainerX(SimpleTrainer):
    """Supervised training on labelled data (train_loader_x)."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        if self.train_loader_x is None:
            raise UserError("no training images (train split is empty); check DATASET.NUM_SHOTS "
                            "and the dataset's split file")
        self.num_batches = len(self.train_loader_x)
        ddp.broadcast_rng_state()  # DDP: every rank draws rank 0's global batches
        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            self.grad_weight = ddp.batch_weight(self.train_loader_x)  # DDP: share of the batch
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
            only_few_batches = self.num_batches < self.cfg.TRAIN.PRINT_FREQ
            if meet_freq or only_few_batches:
                nb_remain = self.num_batches - self.batch_idx - 1
                nb_remain += (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
                print(" ".join([
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}", f"lr {self.get_current_lr():.4e}", f"eta {eta}",
                ]), flush=True)
            n_iter = self.epoch * self.num_batches + self.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", self.get_current_lr(), n_iter)
            end = time.time()

    def parse_batch_train(self, batch):
        input = batch["img"].to(self.device)
        label = batch["label"].to(self.device)
        domain = batch["domain"].to(self.device)
        return input, label, domain
