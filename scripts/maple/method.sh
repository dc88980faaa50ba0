#!/usr/bin/env bash
# MaPLe in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/MaPLe/<backbone>_<schedule>.yaml (tiny_vit_ep10.yaml on the demo); ViT backbones
# only (a ResNet is refused with one line).
TRAINER=MaPLe
case "$(basename "$0")" in  # upstream's cross-dataset/DG source recipe differs
    xd_*|dg_*) CFG_REAL=ep2_batch4_2ctx_xd ;;
    *) CFG_REAL=ep5_batch4_2ctx ;;
esac
CFG_TINY=ep10
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
