"""Tools answer --help, and scripts print their first line, before importing torch
(which costs seconds of CPU): the pinned property is that torch is not imported, not
a time, so the test holds on any machine."""
import os.path as osp
import subprocess
import sys

from tests.conftest import ROOT

TOOLS = ["backbones", "bench", "cache", "check_data", "compare", "grid", "methods",
         "parse_results", "protocols"]

PROBE = r"""
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("TORCH" if "torch" in sys.modules else "NO TORCH", file=sys.stderr)
"""


def test_every_tools_help_imports_no_torch():
    for name in TOOLS:
        path = osp.join(ROOT, "tools", name + ".py")
        proc = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert "usage:" in proc.stdout, (name, proc.stderr[-2000:])
        assert proc.stderr.strip().endswith("NO TORCH"), (name, proc.stderr[-2000:])


def test_the_grid_says_what_it_plans_before_importing_torch(tmp_path):
    probe = r"""
import builtins, sys
real_print = builtins.print
def first_print(*a, **k):
    real_print("TORCH" if "torch" in sys.modules else "NO TORCH", file=sys.stderr)
    builtins.print = real_print
    real_print(*a, **k)
builtins.print = first_print
import runpy
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
"""
    proc = subprocess.run([sys.executable, "-c", probe, osp.join(ROOT, "tools", "grid.py"),
                           "--methods", "coop", "--datasets", "demo", "--dry-run"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.stdout.startswith("Planning the grid (coop on demo)"), proc.stdout[:500]
    assert proc.stderr.startswith("NO TORCH"), proc.stderr[:2000]
