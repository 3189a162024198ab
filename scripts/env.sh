# Sourced by the entry wrappers: picks the project's Python and puts the repository on PYTHONPATH.
EGSTALKER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${EGSTALKER_PYTHON:-}" ]; then
  PY="$EGSTALKER_PYTHON"
elif [ -x "$EGSTALKER_ROOT/.venv/bin/python" ]; then
  PY="$EGSTALKER_ROOT/.venv/bin/python"
else
  echo "error: no project environment; run 'bash scripts/setup.sh' first (or set EGSTALKER_PYTHON)" >&2
  exit 2
fi
export PYTHONPATH="$EGSTALKER_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
