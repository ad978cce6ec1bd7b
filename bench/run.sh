#!/usr/bin/env bash
# Every benchmark stage against one server, appended as JSON lines to bench/results/.
# Usage: bench/run.sh [DB_URL] (default: the MariaDB at 127.0.0.1:3306; for PostgreSQL
# postgresql+psycopg://postgres@127.0.0.1:5432/postgres: every stage but cluster runs there).
# Run it on a quiet machine: the figures are only comparable within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
# `infsched bench` comes from plugins/bench: make installs it with the core.
make -s .venv/.installed
url=${1:-mysql+pymysql://root@127.0.0.1:3306/mysql}
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$(hostname).jsonl"
run() { .venv/bin/infsched bench --db "$url" --json "$@" | tee -a "$out"; }
run --stage insert,schedule,execute
run --stage scan --rows 1000000
run --stage lag --rate 2000 --seconds 60
run --stage memory --rows 1000000
echo "results: $out"
