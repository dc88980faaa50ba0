#!/usr/bin/env bash
# SoftCPT on a suite (or one dataset), seeds $SEEDS (default 1 2 3), through tools/grid.py
# (the paper's 50 epochs for every shot count; 10 on the tiny demo backbones).
# usage: bash scripts/softcpt/main.sh DATASET SHOTS [BACKBONE] [VARIANT]
#   VARIANT: NATA (default) NATS CATA CSTA CATS CSTS
#   e.g. bash scripts/softcpt/main.sh fewshot44 16 rn50 NATA
#   GPUS="0 1 2" runs the three seeds at once, one per GPU; WORKERS=2 two at once on CPU;
#   EXECUTOR=slurm submits them (SLURM_PARTITION etc.); OPTS="KEY VALUE ..." (scripts/common.sh).
# Class sampling (TRAINER.SOFTCPT.CLS_SAMPLE_RATE): 0.1 for the class-aware
# variants (CA*, CS*) on general10, as upstream's README runs them; 0 (all
# classes) otherwise. CLS_SAMPLE_RATE=R changes it; a rate other than this
# default is named in the output folder (<variant>_csr<R>).
# (A thin wrapper of scripts/main.sh softcpt; the method's declaration is in trainers/softcpt.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/softcpt/main.sh DATASET SHOTS [BACKBONE] [VARIANT]"
exec bash "$REPO/scripts/main.sh" softcpt "$@"
