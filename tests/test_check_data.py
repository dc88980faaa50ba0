"""tools/check_data.py and the same check in train.py."""
import contextlib
import io
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.suite_layouts import write_fashion20, write_plant6
from toolbox.data.datasets import DATASET_REGISTRY

import datasets  # noqa: F401
import train
from datasets.suites import FASHION20_TASKS, GENERAL10_TASKS, PLANT6_TASKS, RS8_TASKS
from tools import check_data

ALL44 = GENERAL10_TASKS + PLANT6_TASKS + RS8_TASKS + FASHION20_TASKS


def run_tool(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check_data.main([str(a) for a in argv])
    return code, out.getvalue()


def test_empty_root_names_all_44_tasks_with_paths_and_exits_nonzero(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    proc = subprocess.run([sys.executable, osp.join(ROOT, "tools", "check_data.py"),
                           "--root", str(root), "--dataset-config-file",
                           osp.join(ROOT, "configs/datasets/fewshot44.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    for name in ALL44:
        cls = DATASET_REGISTRY.get(name)
        section = cls.datasets_md_section
        assert any(ln.split()[:2] == [name, "missing"] for ln in lines), name
        for expected in cls.expected_paths(str(root)):  # every missing path, not the first
            what = "file" if osp.splitext(expected)[1] else "folder"
            assert sum(f": {what} not found: {expected} (see DATASETS.md, section '{section}'"
                       in ln for ln in lines) == 1, (name, expected)
    # Fashion-20's shared folder and task file: one line each, not 20
    shared = [ln for ln in lines if "fashion20" in ln and "not found" in ln]
    assert len(shared) == 2 and all(ln.strip().startswith("20 tasks (") for ln in shared)
    # a split source names the split file that makes it unnecessary, and is listed apart
    # from the paths every run needs
    req = lines.index("Missing (34 path(s), required):")
    opt = next(i for i, ln in enumerate(lines) if ln.startswith("Missing (17 path(s), needed "
                                                                  "only to build a split"))
    split_src = [i for i, ln in enumerate(lines) if "not needed with the split file" in ln]
    assert len(split_src) == 17 and min(split_src) > opt > req
    assert any("variants.txt" in lines[i] and "split_FGVCAircraft.json" in lines[i]
               for i in split_src)
    assert all("not needed" not in ln for ln in lines[req:opt])
    assert lines[-1] == "0 of 44 tasks ready; 44 missing or broken (see DATASETS.md)"
    assert os.listdir(root) == []  # nothing written for missing datasets


def test_found_tasks_report_split_sizes_and_classes(tmp_path):
    root = str(tmp_path)
    write_plant6(root)
    code, out = run_tool("--root", root, "--dataset-config-file",
                         osp.join(ROOT, "configs/datasets/plant6.yaml"))
    assert code == 0, out
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.split()
            and ln.split()[0] in PLANT6_TASKS}
    # own split folders: 3/1/2 per class; else 6 per class split 50/20/30 -> 3/1/2
    assert rows["FruitVegetable"] == ["found", "108", "36", "72", "36"]
    assert rows["PlantVillage"] == ["found", "117", "39", "78", "39"]
    assert out.splitlines()[-1] == "6 of 6 tasks ready"
    # no few-shot cache is drawn and no split file written by the check; the split
    # files a first run would build are listed as optional
    assert not osp.exists(osp.join(root, "kaggle_flower", "split_fewshot"))
    split = osp.join(root, "kaggle_flower", "split_KaggleFlower.json")
    assert not osp.exists(split)
    assert f"  KaggleFlower: {split}" in out.splitlines()
    assert "Optional (" in out and "--write-splits" in out
    code, out = run_tool("--root", root, "--dataset-config-file",
                         osp.join(ROOT, "configs/datasets/plant6.yaml"), "--write-splits")
    assert code == 0 and osp.exists(split)


def test_verify_images_finds_a_corrupt_image(tmp_path):
    root = str(tmp_path)
    write_plant6(root, n=2)
    cfg = ["--root", root, "--dataset-config-file", osp.join(ROOT, "configs/datasets/plant6.yaml")]
    task = ["DATASET.TASKS", "['KaggleFlower']"]
    code, out = run_tool(*cfg, "--verify-images", *task)
    assert code == 0, out
    folder = osp.join(root, "kaggle_flower", "flowers")
    cls_dir = osp.join(folder, sorted(os.listdir(folder))[0])
    bad = osp.join(cls_dir, sorted(os.listdir(cls_dir))[0])
    with open(bad, "r+b") as f:  # keep the header, cut the pixels
        f.truncate(40)
    code, out = run_tool(*cfg, *task)  # paths and counts only: the image is not opened
    assert code == 0, out
    code, out = run_tool(*cfg, "--verify-images", *task)
    assert code == 1
    assert f"KaggleFlower: 1 unreadable image(s): {bad} (" in out
    assert out.splitlines()[-1].startswith("0 of 1 tasks ready")


def test_backbone_weights_of_the_trainer_config(tmp_path, monkeypatch):
    root = str(tmp_path / "data")
    write_plant6(root, n=2)
    monkeypatch.setenv("CLIP_CACHE", str(tmp_path / "cache"))
    base = ["--root", root, "--dataset-config-file",
            osp.join(ROOT, "configs/datasets/plant6.yaml"), "--paths-only"]
    code, out = run_tool(*base, "--config-file",
                         osp.join(ROOT, "configs/trainers/SoftCPT/rn50_ep50.yaml"))
    assert code == 1
    want = osp.join(str(tmp_path / "cache"), "RN50.pt")
    assert f"backbone rn50: weights file not found: {want}" in out
    code, out = run_tool(*base, "--config-file",
                         osp.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml"))
    assert code == 0 and "backbone tiny_vit: weights found at " in out, out
    code, out = run_tool(*base, "--backbone", "no-such-net")
    assert code == 1 and "backbone no-such-net: unknown backbone" in out, out


def test_subset_and_broken_task_file(tmp_path):
    root = str(tmp_path)
    write_fashion20(root, n=3)
    code, out = run_tool("--root", root, "--dataset-config-file",
                         osp.join(ROOT, "configs/datasets/fewshot44.yaml"),
                         "DATASET.TASKS", "['FashionHatStyle', 0]")
    assert code == 1
    assert "FashionHatStyle" in out and "Caltech101" in out and "DTD" not in out
    assert "1 of 2 tasks ready" in out
    with open(osp.join(root, "fashion20", "task_info.csv"), "w") as f:
        f.write("hat_style\tcap\n")
    code, out = run_tool("--root", root, "--dataset-config-file",
                         osp.join(ROOT, "configs/datasets/fashion20.yaml"), "--paths-only")
    assert code == 1 and "two or more distinct" in out and out.count(" error ") >= 20


def test_train_stops_before_loading_with_first_missing_path(tmp_path, capsys):
    root = str(tmp_path)
    write_plant6(root, n=2)
    missing = osp.join(root, "plant_seedling_v1", "Nonsegmented")
    os.rename(missing, missing + "_old")
    with pytest.raises(SystemExit) as e:
        train.cli(["--root", root, "--trainer", "CoOp", "--output-dir", str(tmp_path / "out"),
                   "--dataset-config-file", osp.join(ROOT, "configs/datasets/plant6.yaml"),
                   "--config-file", osp.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: PlantSeedlingV1: dataset folder not found: {missing} "
                   "(see DATASETS.md, section 'Plant-6')")
    # nothing was drawn for the tasks that are there: the check ran before any loading
    assert not osp.exists(osp.join(root, "kaggle_flower", "split_KaggleFlower.json"))


def test_datasets_md_says_where_to_get_every_task():
    """DATASETS.md: each of the 44 tasks and ImageNet with its four variants has its
    layout section and a source row (page, access, size); Fashion-20 says its images are
    not public and how to bring one's own."""
    import re

    with open(osp.join(ROOT, "DATASETS.md")) as f:
        md = f.read()
    titles = set(re.findall(r"^## (.+)$", md, re.M))
    where = md.split("## Where to get each dataset", 1)[1].split("\n## ", 1)[0]
    sources = {row.split("|")[1].strip(" `") for row in where.splitlines()
               if row.startswith("| ") and row.count("|") == 6}
    imagenets = ["ImageNet", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
    assert len(ALL44) == 44
    for name in ALL44 + imagenets:
        section = DATASET_REGISTRY.get(name).datasets_md_section
        assert section in titles, name
        if name in GENERAL10_TASKS + imagenets:
            assert name in sources, name
        elif name in PLANT6_TASKS + RS8_TASKS:
            body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
            # its row in the section's source table: page, image count and size (a figure,
            # or what is known of it)
            rows = [r for r in body.splitlines() if r.startswith(f"| `{name}` |")]
            assert len(rows) == 2 and re.search(r"\| [\d,about ]+ \| [^|]*(\d|not known)[^|]* \|$",
                                                rows[1]), name
    fashion = md.split("## Fashion-20\n", 1)[1].split("\n## ", 1)[0]
    assert "not public" in fashion and "bring your own images" in fashion
    assert "task_info.csv" in fashion and "images/<task_id>/<class_id>/" in fashion
