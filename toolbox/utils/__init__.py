from .tools import (
    mkdir_if_missing, read_json, write_json, atomic_write, listdir_nohidden,
    read_image, set_random_seed, collect_env_info, get_rng_state,
    set_rng_state, check_isfile, current_umask, remove_stale_temp_files,
)
from .logger import setup_logger
from .progress import progress
from .meters import AverageMeter, MetricMeter
from .torchtools import (
    save_checkpoint, load_checkpoint, prune_checkpoints, resume_from_checkpoint,
    load_pretrained_weights, count_num_param,
)
from .registry import Registry
