#!/usr/bin/env bash
# cocoop in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/cocoop.py.
METHOD=cocoop
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
