#!/usr/bin/env bash
# Thin wrapper: installs the Basel Face Model files for `preprocess.sh --tracker bfm`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/scripts/env.sh"
exec "$PY" "$EGSTALKER_ROOT/scripts/launch.py" data_utils.bfm.install "$@"
