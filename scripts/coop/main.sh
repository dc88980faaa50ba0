#!/usr/bin/env bash
# CoOp on one dataset or a suite, seeds $SEEDS (default 1 2 3), through tools/grid.py.
# usage: bash scripts/coop/main.sh DATASET SHOTS [BACKBONE] [N_CTX] [CSC] [CLASS_TOKEN_POSITION]
#   e.g. bash scripts/coop/main.sh eurosat 16 rn50 16 False end
#   WORKERS=2 / GPUS="0 1 2" / EXECUTOR=slurm run the seeds at once; OPTS="KEY VALUE ..."
#   adds overrides (see scripts/common.sh).
# Schedule: CoOp's shot-dependent epochs on single datasets (ep50 for 1-2 shots, ep100 up
# to 8, ep200 above), ep50 on suites (SoftCPT's setting), ep10 on the tiny backbones. A
# config's CTX_INIT fixes the context (its words) unless N_CTX is given here, which then
# wins with a random init; the variant folder nctx<N>_csc<CSC>_ctp<POS> says which it was.
# (A thin wrapper of scripts/main.sh coop; the declaration is in trainers/coop.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/coop/main.sh DATASET SHOTS [BACKBONE] [N_CTX] [CSC] [CLASS_TOKEN_POSITION]"
exec bash "$REPO/scripts/main.sh" coop "$@"
