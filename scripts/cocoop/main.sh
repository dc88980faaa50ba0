#!/usr/bin/env bash
# CoCoOp on one dataset or a suite (4 context tokens "a photo of a", 10 epochs,
# batch 1 as in CoCoOp's paper), seeds $SEEDS, through tools/grid.py.
# usage: bash scripts/cocoop/main.sh DATASET SHOTS [BACKBONE]
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
# (A thin wrapper of scripts/main.sh cocoop; the declaration is in trainers/cocoop.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/cocoop/main.sh DATASET SHOTS [BACKBONE]"
exec bash "$REPO/scripts/main.sh" cocoop "$@"
