from .tools import (
    mkdir_if_missing, read_json, write_json, atomic_write, listdir_nohidden,
    read_image, set_random_seed, collect_env_info, get_rng_state,
    set_rng_state, check_isfile, current_umask, remove_stale_temp_files,
)
from .logger import setup_logger
from .progress import progress
from .registry import Registry

# Names that need torch are imported on first use: tools that only read result files
# (compare, grid planning, --help) start without importing torch.
_LAZY = {
    "AverageMeter": "meters", "MetricMeter": "meters",
    "save_checkpoint": "torchtools", "load_checkpoint": "torchtools",
    "prune_checkpoints": "torchtools", "resume_from_checkpoint": "torchtools",
    "load_pretrained_weights": "torchtools", "count_num_param": "torchtools",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
