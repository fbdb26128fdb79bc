#!/usr/bin/env bash
# Set up .venv (CPU torch pinned first, then dynrec with its dev extras) and run one job:
#   scripts/dev.sh demo   train + evaluate SASRec and GRU4Rec on ml-100k, print a results table
#   scripts/dev.sh test   the test suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.dynrec-installed"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet torch==2.13.0   # the CPU build; a bare `torch` would pull a multi-GB CUDA build
    "$VENV/bin/pip" install --quiet -e ".[dev]"
    touch "$STAMP"
fi

case "${1:-}" in
    demo) shift; exec "$VENV/bin/dynrec" demo "$@" ;;
    test) shift; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) echo "usage: scripts/dev.sh demo|test [args...]" >&2; exit 2 ;;
esac
