#!/usr/bin/env bash
# MaPLe, base-to-new: evaluate the base-class model on the new classes of DATASET.
# usage: bash scripts/maple/base2new_test.sh DATASET SEED   (environment: see scripts/protocols.sh)
source "$(dirname "$0")/method.sh"
b2n_test "$@"
