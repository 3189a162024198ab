#!/usr/bin/env bash
# Sets up the environment if needed, then runs the whole pipeline on the built-in sample (see --help).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/setup.sh
source scripts/env.sh
exec "$PY" scripts/run_sample.py "$@"
