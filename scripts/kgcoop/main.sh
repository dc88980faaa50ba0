#!/usr/bin/env bash
# KgCoOp few-shot on one dataset or a suite, seeds $SEEDS (default 1 2 3), through
# tools/grid.py: configs/trainers/KgCoOp/<backbone>_ep10_batch4.yaml (rn50, vit_b16;
# tiny_vit_ep10.yaml on the demo). Variant folder w<W>.
# usage: bash scripts/kgcoop/main.sh DATASET SHOTS [BACKBONE] [W]
#   W: weight of the knowledge-guided term (default 8)
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
# (A thin wrapper of scripts/main.sh kgcoop; the declaration is in trainers/kgcoop.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/kgcoop/main.sh DATASET SHOTS [BACKBONE] [W]"
exec bash "$REPO/scripts/main.sh" kgcoop "$@"
