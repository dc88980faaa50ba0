#!/usr/bin/env bash
# Linear-probe CLIP: logistic regression per task on frozen image features,
# C searched on the val split with the task's metric; seeds $SEEDS, through tools/grid.py.
# usage: bash scripts/linear_probe/main.sh DATASET SHOTS [BACKBONE]
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/linear_probe/main.sh DATASET SHOTS [BACKBONE]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
run_grid linear_probe logreg "$DATASET" "$SHOTS" "$BACKBONE"
