#!/usr/bin/env bash
# Thin wrapper (.venv via scripts/env.sh): forwards every argument to predict.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
exec "$PY" "$EGSTALKER_ROOT/scripts/launch.py" predict "$@"
