#!/usr/bin/env bash
# CoOp trained jointly on a suite with hard context sharing, seeds $SEEDS, through
# tools/grid.py (50 epochs; 10 on the tiny backbones).
# usage: bash scripts/coop_mt/main.sh DATASET SHOTS [BACKBONE] [MODE]
#   MODE: shared (CoOp-MT), task (CoOp-CA, default), class (CoOp-CS)
#   WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
# (A thin wrapper of scripts/main.sh coop_mt; the declaration is in trainers/coop_mt.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/coop_mt/main.sh DATASET SHOTS [BACKBONE] [MODE]"
exec bash "$REPO/scripts/main.sh" coop_mt "$@"
