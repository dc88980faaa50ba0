#!/usr/bin/env bash
# DualViewMI in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/DualViewMI/<backbone>_ep10_batch4.yaml (tiny_vit_ep10.yaml on the demo).
TRAINER=DualViewMI
CFG_REAL=ep10_batch4
CFG_TINY=ep10
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
