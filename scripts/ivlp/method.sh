#!/usr/bin/env bash
# IVLP in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/IVLP/<backbone>_<schedule>.yaml (tiny_vit_ep10.yaml on the demo); ViT backbones
# only (a ResNet is refused with one line).
TRAINER=IVLP
CFG_REAL=ep20_batch4_4ctx
CFG_TINY=ep10
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
