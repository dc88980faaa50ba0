#!/usr/bin/env bash
# PromptSRC in the generalisation protocols (scripts/protocols.sh): configs
# configs/trainers/PromptSRC/<backbone>_<schedule>.yaml (tiny_vit_ep10.yaml on the demo); ViT backbones
# only (a ResNet is refused with one line).
TRAINER=PromptSRC
case "$(basename "$0")" in  # upstream's cross-dataset/DG source recipe differs
    xd_*|dg_*) CFG_REAL=ep20_batch4_4ctx_xd ;;
    *) CFG_REAL=ep20_batch4_4ctx ;;
esac
CFG_TINY=ep10
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
