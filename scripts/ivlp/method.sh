#!/usr/bin/env bash
# ivlp in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/ivlp.py.
METHOD=ivlp
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
