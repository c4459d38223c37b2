#!/usr/bin/env bash
# One-shot set-up: Debian packages (when root), then .venv with requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DEBIAN_PACKAGES="dataset-fashion-mnist chromium chromium-driver fonts-noto-cjk"

missing=""
for pkg in $DEBIAN_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing Debian packages:$missing"
    echo "[setup] install them with: sudo apt-get install$missing"
    echo "[setup] (without them, 'python -m d2l_local data --fetch' downloads Fashion-MNIST where there is internet)"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# d2l pins old numpy/matplotlib/pandas; its code runs fine with current ones.
.venv/bin/python -m pip install -q --no-deps d2l==1.0.3
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "[setup] .venv ready: $(.venv/bin/python -c 'import torch, d2l_local; print("torch", torch.__version__, "d2l_local", d2l_local.__version__)')"
