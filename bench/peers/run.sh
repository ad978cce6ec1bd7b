#!/usr/bin/env bash
# The peer comparison on one PostgreSQL server: pgqueuer and procrastinate from PyPI,
# each in a fresh database, then `infsched bench --stage insert,schedule,execute`.
# Usage: bench/peers/run.sh [DB_URL] (default: the PostgreSQL at 127.0.0.1:5432).
# ROUNDS=n (default 1) repeats all three in turn; JOBS=n (default 20000) per library.
# The JSON lines go to stdout and to bench/results/<UTC stamp>-<host>-pg-peers.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s .venv/.installed
peers=bench/peers/.venv
# A venv of its own (gitignored): the peers' dependencies stay out of ours.
if [ ! -x "$peers/bin/python" ] || ! "$peers/bin/python" -c 'import pgqueuer, procrastinate' 2>/dev/null; then
  "${PYTHON:-python3}" -m venv "$peers"
  "$peers/bin/python" -m pip install -q -r bench/peers/requirements.txt
fi
url=${1:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$(hostname)-pg-peers.jsonl"
"$peers/bin/python" bench/peers/peers.py "$url" --jobs "${JOBS:-20000}" --rounds "${ROUNDS:-1}" \
  --infsched .venv/bin/infsched | tee -a "$out"
echo "results: $out" >&2
