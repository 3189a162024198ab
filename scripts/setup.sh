#!/usr/bin/env bash
# Creates (once) and updates the project's virtual environment in .venv from the pinned requirements.
# Reinstalls only when requirements*.txt change. Installs espeak-ng (speech for the built-in sample) when possible.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pick_python() {
  for py in "${EGSTALKER_BASE_PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  base="$(pick_python)" || { echo "error: Python 3.11 or 3.12 is required (set EGSTALKER_BASE_PYTHON to one)" >&2; exit 2; }
  echo "[setup] creating .venv with $("$base" --version)"
  "$base" -m venv .venv
fi

has_cuda=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_cuda=1; fi
reqs=(requirements.txt)
[ "$has_cuda" = 1 ] && reqs+=(requirements-gpu.txt)
stamp=".venv/.egstalker-installed"
want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned packages (${reqs[*]}); the first time takes a few minutes"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  .venv/bin/python -m pip install --disable-pip-version-check -q "${args[@]}"
  if [ "$has_cuda" = 1 ]; then
    echo "[setup] building gsplat's CUDA kernels (once, about a minute)"
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" .venv/bin/python -c "from gsplat.cuda._backend import _C" \
      || { echo "error: gsplat's CUDA build failed; check nvcc and the CUDA toolkit (see docs/usage.md, Troubleshooting)" >&2; exit 2; }
  fi
  echo "$want" > "$stamp"
fi

if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing espeak-ng (speech for the built-in sample)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >/dev/null 2>&1 \
      || echo "[setup] note: could not install espeak-ng; the sample will use synthesised vowel speech instead"
  else
    echo "[setup] note: espeak-ng not found (install it with your package manager for a spoken sample); using synthesised vowel speech"
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium (the live page's browser test)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "[setup] note: could not install chromium; the live page's browser test will be skipped"
  else
    echo "[setup] note: chromium not found (install it with your package manager); the live page's browser test will be skipped"
  fi
fi
echo "[setup] environment ready: $(.venv/bin/python --version), device: $([ "$has_cuda" = 1 ] && echo CUDA || echo CPU)"
