"""The shipped digits-pretrained tiny CLIP: same weights on every CPU, a small
compact file whose sha256 is checked, and one pre-training for parallel runs
when no file is shipped."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from toolbox.errors import UserError
from trainers import tiny_clip

SHIPPED = sorted(tiny_clip.SHIPPED_SHA256)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_is_small_and_matches_its_sha256(name):
    path = tiny_clip.shipped_file(name)
    assert osp.getsize(path) < 2.5e6  # the full fp32 state dict is 13.6 / 14.5 MB
    assert tiny_clip.file_sha256(path) == tiny_clip.SHIPPED_SHA256[name]


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_loaded_weights_are_identical_without_avx(capability):
    """ATEN_CPU_CAPABILITY=default runs torch's kernels as on a CPU without AVX2,
    where torch.normal_ rounds differently: the loaded weights must not change."""
    code = ("from trainers import tiny_clip as t\n"
            "for n in sorted(t.SHIPPED_DIGEST):\n"
            "    print(n, t.state_digest(t.tiny_state_dict(n, '/nonexistent')))\n")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert dict(zip(out[::2], out[1::2])) == tiny_clip.SHIPPED_DIGEST


def test_portable_init_is_normal_like_and_reproducible():
    a = tiny_clip.portable_normal((4000, 64), 0.02, seed=0)
    b = tiny_clip.portable_normal((4000, 64), 0.02, seed=0)
    assert torch.equal(a, b)
    assert abs(a.std().item() - 0.02) < 5e-4 and abs(a.mean().item()) < 5e-4
    assert not torch.equal(a, tiny_clip.portable_normal((4000, 64), 0.02, seed=1))


@pytest.mark.parametrize("name", SHIPPED)
def test_pack_keeps_only_changed_token_rows_and_unpacks_exactly(name):
    state = tiny_clip.load_shipped(name)
    packed = tiny_clip.pack_state(name, state)
    assert 10 < len(packed["token_rows"]) < 40  # the tokens of the ten captions
    again = tiny_clip.unpack_state(packed)
    assert tiny_clip.state_digest(again) == tiny_clip.SHIPPED_DIGEST[name]


def test_damaged_shipped_file_is_a_one_line_error(tmp_path, monkeypatch):
    name = "tiny-vit-digits"
    bad = tmp_path / f"{name}.pt"
    bad.write_bytes(open(tiny_clip.shipped_file(name), "rb").read()[:-10] + b"0123456789")
    monkeypatch.setattr(tiny_clip, "WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(UserError, match="damaged.*make_tiny_weights"):
        tiny_clip.tiny_state_dict(name, str(tmp_path / "cache"))


LOCK_WORKER = """
import sys, time
sys.path.insert(0, {root!r})
from trainers import tiny_clip as t
t.WEIGHTS_DIR = {empty!r}  # no shipped file: pre-train on demand
def fake(name, progress=True):
    with open({log!r}, "a") as f:
        f.write("trained\\n")
    time.sleep(1.0)
    return t.random_tiny(name[: -len(t.PRETRAINED_SUFFIX)]).state_dict()
t.pretrained_state = fake
print(t.state_digest(t.tiny_state_dict("tiny-vit-digits", {cache!r})))
"""


def test_parallel_runs_pretrain_once_under_a_lock(tmp_path):
    log = tmp_path / "log"
    code = LOCK_WORKER.format(root=ROOT, empty=str(tmp_path / "none"), log=str(log),
                              cache=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert log.read_text().count("trained") == 1
    digests = {o[0].split()[-1] for o in outs}
    assert len(digests) == 1
    assert (tmp_path / "cache" / "tiny-vit-digits.pt").is_file()
