#!/usr/bin/env bash
# Linear-probe CLIP: logistic regression per task on frozen image features,
# C searched on the val split with the task's metric; seeds $SEEDS, through tools/grid.py.
# usage: bash scripts/linear_probe/main.sh DATASET SHOTS [BACKBONE]
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
# (A thin wrapper of scripts/main.sh linear_probe; the declaration is in trainers/linear_probe.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/linear_probe/main.sh DATASET SHOTS [BACKBONE]"
exec bash "$REPO/scripts/main.sh" linear_probe "$@"
