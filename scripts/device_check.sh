#!/usr/bin/env bash
# The GPU check of scripts/device_check.py, for this workplace's GPU machine (python3 there has torch but
# not pydantic): installs the wheels carried in .whl/ (fetch them first with
# `.venv/bin/python scripts/device_check.py --fetch-wheels`) when pydantic is missing, then runs the check
# with the arguments given. Device tool call: command "scripts/device_check.sh", carry [".whl"].
# With "paper-check" as its first argument it runs scripts/paper_check.py instead (the paper profiles at a few
# steps), e.g. "scripts/device_check.sh paper-check --device cuda".
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "${1:-}" = "paper-check" ]; then
  shift
  exec python3 scripts/paper_check.py "$@"
fi
exec python3 scripts/device_check.py "$@"
