#!/usr/bin/env bash
# IVLP, cross-dataset: train on $XD_SOURCE (default imagenet, 16 shots, all classes).
# usage: bash scripts/ivlp/xd_train.sh SEED   (environment: see scripts/protocols.sh)
source "$(dirname "$0")/method.sh"
xd_train "$@"
