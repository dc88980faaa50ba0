"""Train or evaluate a trainer on a dataset (flags as in the Dassl-based upstream train.py).

    python train.py --root $DATA --seed 1 --trainer <Trainer> \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/<Trainer>/rn50_ep50.yaml \
        --output-dir output/eurosat/<Trainer>/rn50_ep50_16shots/seed1 \
        DATASET.NUM_SHOTS 16
"""
import os
import sys
import warnings

import torch

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from toolbox.config import canonical_backbone, warn_no_op_keys
# the config pipeline (also used by the tools): train.setup_cfg stays importable
from toolbox.config_pipeline import get_parser as _get_parser
from toolbox.config_pipeline import reset_cfg, setup_cfg, split_resume  # noqa: F401
from toolbox.data.datasets.check import require_data
from toolbox.data.suite import warn_suite_flag
from toolbox.engine import build_trainer, distributed
from toolbox.errors import UserError, one_line
from toolbox.run_folder import LOCK, check_run_folder, lock_run_folder, shots_text
from toolbox.utils import atomic_write, collect_env_info, set_random_seed, setup_logger
from trainers.backbones import get_backbone


def get_parser():
    return _get_parser(__doc__.split("\n")[0])


def run_header(cfg, args):
    """What runs, in two lines (the full config: <output>/config.yaml, --verbose)."""
    tasks = f" (tasks {', '.join(map(str, cfg.DATASET.TASKS))})" if cfg.DATASET.TASKS else ""
    from toolbox.engine import TRAINER_REGISTRY

    name = cfg.TRAINER.NAME
    trainer_cls = TRAINER_REGISTRY.get(name) if name in TRAINER_REGISTRY else None
    shots = shots_text(cfg.DATASET.NUM_SHOTS, getattr(trainer_cls, "zero_shot", False))
    if cfg.DATASET.NUM_SHOTS <= 0 and "all" in shots:
        shots += " (results.json: shots -1)"
    what = "evaluate" if args.eval_only else "train"
    out = cfg.OUTPUT_DIR or "(no output folder)"
    return (f"** {what} {cfg.TRAINER.NAME} on {cfg.DATASET.NAME}{tasks} | backbone "
            f"{canonical_backbone(cfg)} | {shots} | seed {cfg.SEED}\n"
            f"** output {out}" + ("" if args.eval_only or not cfg.OUTPUT_DIR else
                                   " (config.yaml, log.txt, results.json)"))


def tiny_cpu_threads(cfg, environ=os.environ):
    """The number of torch threads for this run, or None to keep torch's default.

    A tiny CLIP on the CPU runs on one thread: its matrices (width 64, 17 tokens) are far
    too small for a second thread to help, which only spins. The demo's context-tuning run took 7 s
    of CPU on one thread and 17 s on two, with identical results. OMP_NUM_THREADS, when
    set, wins (the grid runner sets it for several CPU workers; the tests set it)."""
    if "OMP_NUM_THREADS" in environ or (cfg.USE_CUDA and torch.cuda.is_available()):
        return None
    if get_backbone(cfg.MODEL.BACKBONE.NAME).family != "tiny":
        return None
    return 1


def write_config(cfg):
    """The full config of the run, as YAML train.py can read back (--config-file)."""
    atomic_write(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), lambda f: f.write(cfg.dump()))


class SetupFiles:
    """What this run writes before its trainer is built (the output folders it
    creates, log.txt, config.yaml), so that a bad input found while building it
    (missing or mismatched weights, a missing dataset, a checkpoint that does not
    fit) leaves nothing behind."""

    def __init__(self, out):
        self.out = os.path.abspath(out) if out else ""
        self.new_dirs = []
        d = self.out
        while d and not os.path.exists(d):
            self.new_dirs.append(d)
            d = os.path.dirname(d)
        self.config = os.path.join(self.out, "config.yaml") if self.out else ""
        self.had_config = bool(self.config) and os.path.exists(self.config)
        self.lock = os.path.join(self.out, LOCK) if self.out else ""
        self.had_lock = bool(self.lock) and os.path.exists(self.lock)

    def remove(self):
        from toolbox.utils.logger import Logger

        if isinstance(sys.stdout, Logger):
            log = sys.stdout.file.name
            sys.stdout.close()
            sys.stdout = sys.stdout.console
            if os.path.dirname(os.path.abspath(log)) == self.out:
                os.remove(log)
        if self.config and not self.had_config and os.path.exists(self.config):
            os.remove(self.config)
        if self.lock and not self.had_lock and os.path.exists(self.lock):
            os.remove(self.lock)
        for d in self.new_dirs:  # deepest first; only folders left empty
            try:
                os.rmdir(d)
            except OSError:
                break


def main(args):
    cfg = setup_cfg(args)  # (split_resume: a bare --resume gives back an override key)
    threads = tiny_cpu_threads(cfg)
    if threads:
        torch.set_num_threads(threads)
    # torchrun --nproc_per_node N: only rank 0 prints and writes
    main_rank = distributed.launched_rank() == 0
    if not main_rank:
        sys.stdout = open(os.devnull, "w")
    if main_rank:
        warn_no_op_keys(cfg)
        warn_suite_flag(cfg, args.dataset_config_file)
    setup_files = SetupFiles(cfg.OUTPUT_DIR)
    try:
        # Before joining the process group: a refused folder fails every rank alike, and
        # no rank is left waiting in the group for one that has stopped.
        check_run_folder(cfg, eval_only=args.eval_only,
                         bare_resume=args.resume == "__output_dir__", check_lock=main_rank)
        if main_rank and cfg.OUTPUT_DIR and not args.eval_only:
            lock_run_folder(cfg.OUTPUT_DIR)  # one live run per folder (released at exit)
        distributed.init_from_env(cfg.USE_CUDA)
        trainer = setup(cfg, args)
    except UserError:
        if main_rank:
            setup_files.remove()
        raise
    if args.eval_only:
        trainer.test()
        return
    if not args.no_train:
        trainer.train()
    distributed.cleanup()


def setup(cfg, args):
    """Everything up to a built trainer (with its evaluated weights loaded for
    --eval-only); a UserError here leaves the output folder as it was."""
    # check_run_folder ran before (main): a refused run writes nothing into the folder.
    if distributed.is_main_process():
        setup_logger(cfg.OUTPUT_DIR)
    print(run_header(cfg, args))
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    if cfg.OUTPUT_DIR and not args.eval_only and distributed.is_main_process():
        write_config(cfg)
    if args.verbose:
        print("** Config **")
        print(cfg)
        print("** System info **")
        print(collect_env_info())

    require_data(cfg)  # a missing dataset stops here with its path, before any loader is built
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
    return trainer


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def cli(argv=None):
    args = get_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    warnings.formatwarning = _one_line_warning
    try:
        main(args)
    except UserError as e:
        user_error(e)
    except RuntimeError as e:  # a UserError raised inside a DataLoader worker
        if "UserError" in str(e):
            user_error(e)
        raise


QUIET_RANK_WAIT = 20.0  # seconds a non-zero rank waits for rank 0 to report the error


def user_error(exc):
    """One line ``error: ...`` and exit code 2; under torchrun only rank 0 prints it
    (every rank meets the same bad input). Another rank waits for torchrun to stop it
    once rank 0 has failed: exiting first would make torchrun stop rank 0 before it
    printed. Still running after QUIET_RANK_WAIT, its error is its own: it prints it."""
    sys.stdout.flush()
    if distributed.launched_rank() != 0:
        import time

        time.sleep(QUIET_RANK_WAIT)
    print(f"error: {one_line(exc)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:clip.clip")
    cli()
