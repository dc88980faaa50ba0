"""What every method script and real-backbone config promises (docs/running_many.md, docs/reproducibility.md):
each main.sh hands its runs to the grid runner (so SEEDS, OPTS, WORKERS, GPUS and
EXECUTOR apply, finished runs are skipped and interrupted ones resume; the grid's
behaviour is pinned in test_grid.py), compare_all.sh runs every method, and the
real-backbone configs checkpoint every epoch keeping only the last."""
import glob
import os.path as osp
import re

import pytest
import yaml

from tests.conftest import ROOT

MAIN_SCRIPTS = sorted(glob.glob(osp.join(ROOT, "scripts", "*", "main.sh")))
REAL_CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, "configs", "trainers", "*", "*.yaml"))
                      if not osp.basename(p).startswith("tiny_"))


def test_every_method_has_a_few_shot_script():
    methods = {osp.basename(osp.dirname(p)) for p in MAIN_SCRIPTS}
    assert methods == {"cocoop", "coop", "coop_mt", "dualviewmi", "kgcoop", "linear_probe",
                       "softcpt", "zsclip"}


@pytest.mark.parametrize("script", MAIN_SCRIPTS, ids=lambda p: osp.basename(osp.dirname(p)))
def test_main_script_runs_through_the_grid(script):
    with open(script) as f:
        text = f.read()
    assert re.search(r'^source "\$\(dirname "\$0"\)/\.\./common\.sh"$', text, re.M), script
    calls = [ln for ln in text.splitlines() if ln.startswith("run_grid ")]
    assert len(calls) == 1, script  # common.sh's run_grid adds SEEDS, OPTS, WORKERS, ...
    with open(osp.join(ROOT, "scripts", "common.sh")) as f:
        common = f.read()
    assert '[ -n "${OPTS:-}" ] && GRID_ARGS+=(--opts "$OPTS")' in common
    assert '"${GRID_ARGS[@]}"' in common.split("run_grid() {", 1)[1]


def test_compare_all_runs_every_method_by_default():
    with open(osp.join(ROOT, "scripts", "compare_all.sh")) as f:
        text = f.read()
    default = re.search(r"\$\{METHODS:-([^}]*)\}", text).group(1).split()
    assert sorted(default) == sorted(osp.basename(osp.dirname(p)) for p in MAIN_SCRIPTS)


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_real_backbone_configs_checkpoint_every_epoch_keeping_the_last(path):
    with open(path) as f:
        train = (yaml.safe_load(f) or {}).get("TRAIN", {})
    assert train.get("CHECKPOINT_FREQ") == 1 and train.get("CHECKPOINT_KEEP") == 1, path
