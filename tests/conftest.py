"""Shared fixtures: a data root with the demo images written once per session,
and a helper that runs the real train.py entry point."""
import os
import os.path as osp
import subprocess
import sys
import warnings

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

# The digits-pretrained tiny CLIP ships with the code (trainers/weights/); a clip
# cache is only written without it: keep the tests' one inside the checkout
# (git-ignored) instead of the user's clip cache.
os.environ.setdefault("CLIP_CACHE", osp.join(ROOT, ".pytest_cache", "clip"))
os.environ.setdefault("CLIP_OFFLINE", "1")

# Scripts and tools the tests start run this interpreter (the one with torch), not
# whatever `python` comes first on PATH: a suite started as /path/venv/bin/python -m
# pytest without an activated venv passes too. scripts/common.sh reads PYTHON.
BIN = osp.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != BIN:
    os.environ["PATH"] = BIN + os.pathsep + os.environ.get("PATH", "")
os.environ["PYTHON"] = sys.executable

import torch  # noqa: E402

# The tests train tiny models in-process: a second thread only spins on their width-64
# matrices, and on a busy machine OpenMP's spinning makes the same test several times
# slower (two learning tests: 84 s of CPU on two threads, 15 s on one, load average 7).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A DATA root holding the demo digits (images written once per session)."""
    from datasets.demo import ensure_demo_images

    root = tmp_path_factory.mktemp("data")
    ensure_demo_images(str(root / "demo_digits"))
    return str(root)


def make_cfg(root, dataset_config=None, trainer_config=None, opts=()):
    """A frozen config built exactly as train.py builds it (toolbox/config_pipeline.py)."""
    from toolbox.config_pipeline import cfg_from_argv

    argv = ["--root", str(root)]
    if dataset_config:
        argv += ["--dataset-config-file", osp.join(ROOT, dataset_config)]
    if trainer_config:
        argv += ["--config-file", osp.join(ROOT, trainer_config)]
    return cfg_from_argv(argv + list(opts))


def run_train(*argv, check=True, timeout=600, env=None, fresh=False):
    """Run ``python train.py ARGV`` in its own process; return CompletedProcess.

    The process is forked from a server that has imported train.py's modules already
    (tests/warm_train.py: about 5 s of CPU less per run); ``fresh=True``, or
    TEST_FRESH_TRAIN=1 for the whole suite, starts a new interpreter instead. Like a
    user's run, it picks its own thread count unless ENV sets OMP_NUM_THREADS."""
    from tests import warm_train

    full_env = dict(os.environ)
    full_env.update(env or {})
    if fresh or os.environ.get("TEST_FRESH_TRAIN") == "1":
        proc = subprocess.run([sys.executable, osp.join(ROOT, "train.py"), *map(str, argv)],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=full_env)
    else:
        proc = warm_train.run(list(map(str, argv)), full_env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


# The fast tier (`pytest -m fast`, pytest.ini): unit-level test files that run in process
# (no train.py subprocess, no torchrun), together well under 2 minutes on 2 cores. A file
# may also mark itself (pytestmark = pytest.mark.fast).
FAST_FILES = {"test_lr_schedule.py", "test_per_task.py", "test_prompt_logits.py",
              "test_script_conventions.py", "test_demo_configs.py", "test_clip_model.py"}


def pytest_collection_modifyitems(config, items):
    """Files of the fast tier get the fast mark; tests marked cuda (pytest.ini) are
    skipped where no GPU is present."""
    for item in items:
        if osp.basename(str(item.fspath)) in FAST_FILES:
            item.add_marker(pytest.mark.fast)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
