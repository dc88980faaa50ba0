#!/usr/bin/env bash
# CoOp trained jointly on a suite with hard context sharing, seeds $SEEDS, through
# tools/grid.py (50 epochs; 10 on the tiny backbones).
# usage: bash scripts/coop_mt/main.sh DATASET SHOTS [BACKBONE] [MODE]
#   MODE: shared (CoOp-MT), task (CoOp-CA, default), class (CoOp-CS)
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/coop_mt/main.sh DATASET SHOTS [BACKBONE] [MODE]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
MODE="${4:-task}"
case "$MODE" in
    shared|task|class) ;;
    *) die "MODE must be shared, task or class, got '$MODE'" ;;
esac
run_grid coop_mt "$MODE" "$DATASET" "$SHOTS" "$BACKBONE"
