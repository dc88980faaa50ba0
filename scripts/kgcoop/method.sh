#!/usr/bin/env bash
# kgcoop in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/kgcoop.py.
METHOD=kgcoop
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
