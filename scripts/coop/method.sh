#!/usr/bin/env bash
# CoOp in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/CoOp/<backbone>_ep50.yaml (tiny_vit_ep10.yaml on the demo).
TRAINER=CoOp
CFG_REAL=ep50
CFG_TINY=ep10
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
