#!/usr/bin/env bash
# DualViewMI few-shot on one dataset or a suite, seeds $SEEDS (default 1 2 3), through
# tools/grid.py: configs/trainers/DualViewMI/<backbone>_ep10_batch4.yaml (rn50, vit_b16;
# tiny_vit_ep10.yaml on the demo).
# usage: bash scripts/dualviewmi/main.sh DATASET SHOTS [BACKBONE] [INFERENCE]
#   INFERENCE: soft (default; the soft prompts) or fused (soft + hand-crafted features)
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
# (A thin wrapper of scripts/main.sh dualviewmi; the declaration is in trainers/dualviewmi.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/dualviewmi/main.sh DATASET SHOTS [BACKBONE] [INFERENCE]"
exec bash "$REPO/scripts/main.sh" dualviewmi "$@"
