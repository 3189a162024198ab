#!/usr/bin/env bash
# Sets up the environment if needed, then runs the test suite on the CPU (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/setup.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CUDA_VISIBLE_DEVICES="${EGSTALKER_TEST_CUDA:-}"
exec .venv/bin/python -m pytest "$@"
