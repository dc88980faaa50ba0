#!/usr/bin/env bash
# MaPLe, cross-dataset: evaluate the $XD_SOURCE model on DATASET (all: every one of $XD_TARGETS).
# usage: bash scripts/maple/xd_test.sh DATASET|all SEED   (environment: see scripts/protocols.sh)
source "$(dirname "$0")/method.sh"
xd_test "$@"
