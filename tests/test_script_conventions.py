"""What every method script and real-backbone config promises (docs/running_many.md, docs/reproducibility.md):
scripts/main.sh hands a method's runs to the grid runner (so SEEDS, OPTS, WORKERS, GPUS
and EXECUTOR apply, finished runs are skipped and interrupted ones resume; the grid's
behaviour is pinned in test_grid.py), each scripts/<method>/main.sh is that script for
a registered method, compare_all.sh runs every method of the comparison, and the
trainer configs (real-backbone and tiny) checkpoint every epoch keeping only the last."""
import glob
import os.path as osp
import re

import pytest

from tests.conftest import ROOT

MAIN_SCRIPTS = sorted(glob.glob(osp.join(ROOT, "scripts", "*", "main.sh")))
TRAINER_CONFIGS = sorted(glob.glob(osp.join(ROOT, "configs", "trainers", "*", "*.yaml")))


def test_every_method_script_is_the_generic_script_of_a_registered_method():
    from toolbox.methods import load_methods

    registry = load_methods()
    for script in MAIN_SCRIPTS:
        name = osp.basename(osp.dirname(script))
        assert name in registry, script
        with open(script) as f:
            text = f.read()
        assert re.search(r'^source "\$\(dirname "\$0"\)/\.\./common\.sh"$', text, re.M), script
        assert re.search(rf'^exec bash "\$REPO/scripts/main\.sh" {name} ', text, re.M), script


def test_the_generic_script_runs_through_the_grid():
    with open(osp.join(ROOT, "scripts", "main.sh")) as f:
        text = f.read()
    assert [ln for ln in text.splitlines() if ln.startswith("run_method ")]
    with open(osp.join(ROOT, "scripts", "common.sh")) as f:
        common = f.read()
    assert '[ -n "${OPTS:-}" ] && GRID_ARGS+=(--opts "$OPTS")' in common
    # common.sh's run_method adds SEEDS, OPTS, WORKERS, ... and the method's own arguments
    body = common.split("run_method() {", 1)[1]
    assert '"${GRID_ARGS[@]}"' in body and '--script-args "$@"' in body


def test_compare_all_runs_every_method_of_the_comparison_by_default():
    from toolbox.methods import load_methods
    from tools.methods import comparison_entries

    with open(osp.join(ROOT, "scripts", "compare_all.sh")) as f:
        assert 'tools/methods.py" --comparison ${METHODS:-}' in f.read()
    entries = comparison_entries(environ={})
    expected = [n for n, m in load_methods().items() if m.in_comparison]
    assert [e.split(":")[0] for e in entries] == expected
    assert "softcpt:NATA" in entries and "coop_mt:shared,task,class" in entries
    assert "softcpt:NATA,CATA" in comparison_entries(environ={"SOFTCPT_VARIANTS": "NATA CATA"})


@pytest.mark.parametrize("path", TRAINER_CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_trainer_configs_checkpoint_every_epoch_keeping_the_last(path):
    """So an interrupted run resumes (the tiny ones too: the demo's runs are real runs)."""
    from toolbox.config import load_trainer_yaml

    train = load_trainer_yaml(path).get("TRAIN", {})  # with its _BASE_ files
    assert train.get("CHECKPOINT_FREQ") == 1 and train.get("CHECKPOINT_KEEP") == 1, path
