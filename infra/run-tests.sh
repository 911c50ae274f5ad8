#!/usr/bin/env bash
# The test run of `make test`: start the real services, run pytest, always stop them.
# pytest's "no tests collected" (exit 5) is a failure here: a green run must test something.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if ! $BIN/stockcdc infra up; then
    echo "services failed to start; logs are under ${STOCKCDC_STATE_DIR:-.state}/logs" >&2
    $BIN/stockcdc infra down
    exit 1
fi
trap '$BIN/stockcdc infra down' EXIT

$BIN/pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing the run" >&2
    rc=1
fi
exit "$rc"
