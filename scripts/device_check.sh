#!/usr/bin/env bash
# The GPU check of scripts/device_check.py, for this workplace's GPU machine (python3 there has torch but
# not pydantic): installs the wheels carried in .whl/ (fetch them first with
# `.venv/bin/python scripts/device_check.py --fetch-wheels`) when pydantic is missing, then runs the check
# with the arguments given. Device tool call: command "scripts/device_check.sh", carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 scripts/device_check.py "$@"
