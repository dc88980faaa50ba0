#!/usr/bin/env bash
# CoCoOp on one dataset or a suite (4 context tokens "a photo of a", 10 epochs,
# batch 1 as in CoCoOp's paper), seeds $SEEDS, through tools/grid.py.
# usage: bash scripts/cocoop/main.sh DATASET SHOTS [BACKBONE]
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/cocoop/main.sh DATASET SHOTS [BACKBONE]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
run_grid cocoop nctx4_ctxv1 "$DATASET" "$SHOTS" "$BACKBONE"
