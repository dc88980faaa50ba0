"""The digit context ("a photo of the digit") is the demo datasets' choice, set
in their dataset configs; the tiny trainer configs on any other dataset keep
each trainer's own CTX_INIT."""
import glob
import os.path as osp

import pytest

from tests.conftest import ROOT, make_cfg

TINY = {"COOP": "configs/trainers/CoOp/tiny_vit_ep10.yaml",
        "COOP_MT": "configs/trainers/CoOpMT/tiny_vit_ep10.yaml",
        "SOFTCPT": "configs/trainers/SoftCPT/tiny_vit_ep10.yaml",
        "DUALVIEWMI": "configs/trainers/DualViewMI/tiny_vit_ep10.yaml",
        "KGCOOP": "configs/trainers/KgCoOp/tiny_vit_ep10.yaml"}
DIGIT = "a photo of the digit"


@pytest.mark.parametrize("group", sorted(TINY))
def test_digit_context_only_on_demo_datasets(group):
    demo = sorted(glob.glob(osp.join(ROOT, "configs", "datasets", "demo*.yaml")))
    assert len(demo) == 4
    for path in demo:
        cfg = make_cfg("/nonexistent", path, TINY[group])
        assert cfg.TRAINER[group].CTX_INIT == DIGIT, (path, group)
    default = make_cfg("/nonexistent", None, None).TRAINER[group].CTX_INIT
    for name in ("eurosat", "general10", "fashion_hat_style"):
        cfg = make_cfg("/nonexistent", f"configs/datasets/{name}.yaml", TINY[group])
        assert cfg.TRAINER[group].CTX_INIT == default != DIGIT, (name, group)


def test_no_trainer_config_sets_the_digit_context():
    for path in glob.glob(osp.join(ROOT, "configs", "trainers", "*", "*.yaml")):
        with open(path) as f:
            assert DIGIT not in f.read(), path


def test_grid_names_coop_context_from_the_dataset_config():
    from toolbox.methods import RunContext, get_method, load_methods
    from tools.grid_plan import dataset_yaml

    load_methods()
    coop = get_method("coop")

    def ctx(dataset):
        return RunContext(dataset, 4, "tiny_vit", "tiny", False, "fewshot", dataset_yaml(dataset))

    demo = coop.setting(ctx("demo"), "default")
    assert demo.variant == "nctx5_cscFalse_ctpend" and "TRAINER.COOP.CTX_INIT" not in demo.opts
    other = coop.setting(ctx("eurosat"), "default")
    assert other.variant.startswith("nctx16_")


def test_tiny_backbone_on_cpu_runs_on_one_thread_unless_told():
    import train

    tiny = make_cfg("/nonexistent", "configs/datasets/demo.yaml", TINY["COOP"])
    assert train.tiny_cpu_threads(tiny, environ={}) == 1
    # OMP_NUM_THREADS (set by the grid runner's CPU workers, the tests or the user) wins
    assert train.tiny_cpu_threads(tiny, environ={"OMP_NUM_THREADS": "2"}) is None
    real = make_cfg("/nonexistent", "configs/datasets/eurosat.yaml",
                    "configs/trainers/CoOp/rn50_ep50.yaml")
    assert train.tiny_cpu_threads(real, environ={}) is None
