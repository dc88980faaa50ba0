#!/usr/bin/env bash
# MaPLe, base-to-new: train on the base classes of DATASET ($SHOTS shots, default 16).
# usage: bash scripts/maple/base2new_train.sh DATASET SEED   (environment: see scripts/protocols.sh)
source "$(dirname "$0")/method.sh"
b2n_train "$@"
