#!/usr/bin/env bash
# Thin wrapper: renders the validation frames of a trained model from its saved configuration (predict.py --direct).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
exec "$PY" "$EGSTALKER_ROOT/scripts/launch.py" predict --direct "$@"
