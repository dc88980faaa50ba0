#!/usr/bin/env bash
# CoCoOp in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/CoCoOp/<backbone>_c4_ep10_batch1_ctxv1.yaml (tiny_vit_c4_ep10_batch1_ctxv1.yaml on the demo).
TRAINER=CoCoOp
CFG_REAL=c4_ep10_batch1_ctxv1
CFG_TINY=c4_ep10_batch1_ctxv1
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
