#!/usr/bin/env bash
# KgCoOp in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/KgCoOp/<backbone>_ep10_batch4.yaml (tiny_vit_ep10.yaml on the demo).
TRAINER=KgCoOp
CFG_REAL=ep10_batch4
CFG_TINY=ep10
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
