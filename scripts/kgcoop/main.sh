#!/usr/bin/env bash
# KgCoOp few-shot on one dataset or a suite, seeds $SEEDS (default 1 2 3), through
# tools/grid.py: configs/trainers/KgCoOp/<backbone>_ep10_batch4.yaml (rn50, vit_b16;
# tiny_vit_ep10.yaml on the demo). Variant folder w<W>.
# usage: bash scripts/kgcoop/main.sh DATASET SHOTS [BACKBONE] [W]
#   W: weight of the knowledge-guided term (default 8)
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/kgcoop/main.sh DATASET SHOTS [BACKBONE] [W]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
W="${4:-8}"
[[ "$W" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "W must be a non-negative number, got '$W'"
run_grid kgcoop "w$W" "$DATASET" "$SHOTS" "$BACKBONE"
