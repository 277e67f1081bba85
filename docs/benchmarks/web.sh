#!/usr/bin/env bash
# The status page over a large history: S services with a year of nightly
# backups each (S x 365 catalog rows, every one with its run) and 200 log
# lines in each of the newest 50 runs. Times R sequential requests of each
# page with curl against `serve`, and the server's peak RSS.
#
#   docs/benchmarks/web.sh [S=50] [R=20]
#
# Needs: a build (BIN, default the release build, built if missing), sqlite3,
# curl. Results: docs/benchmarks/web.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${1:-50}
R=${2:-20}
BIN=${BIN:-target/release/homelab-autopilot}
[ -x "$BIN" ] || cargo build --release --locked
BIN=$(realpath "$BIN")
WORK=$(mktemp -d)
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/etc" "$WORK/data"
{
    printf 'http:\n  listen: "127.0.0.1:0"\nservices:\n'
    for i in $(seq 1 "$S"); do printf '  - name: svc%d\n    backup_paths: ["%s"]\n' "$i" "$WORK/data"; done
} >"$WORK/etc/c.yaml"
chmod 600 "$WORK/etc/c.yaml"
run() { "$BIN" --config "$WORK/etc/c.yaml" --state-dir "$WORK/state" -q "$@"; }
# One real run creates the state DB and its schema; the history is inserted.
echo data >"$WORK/data/f"
run run backup --service svc1
NOW=$(date +%s)
sqlite3 "$WORK/state/state.db" <<SQL
PRAGMA synchronous=OFF;
WITH RECURSIVE d(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM d WHERE n < 365)
INSERT INTO runs (workflow, services, started_at, finished_at, status, summary, pid, hostname)
  SELECT 'backup', '[]', $NOW - n * 86400, $NOW - n * 86400 + 300, 'success', 'ok', 1, 'bench'
  FROM d ORDER BY n DESC;
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $S)
INSERT INTO backups (service, kind, location, size, sha256, created_at, verified_at, status, run_id)
  SELECT 'svc' || s.i, 'archive', '/b/svc' || s.i || '/' || r.id || '.tar.zst',
         1000000 + r.id * 1000 + s.i, NULL, r.started_at + 10, r.started_at + 20,
         CASE WHEN r.id % 30 = 0 THEN 'deleted' ELSE 'complete' END, r.id
  FROM s, runs r WHERE r.hostname = 'bench';
WITH RECURSIVE e(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM e WHERE k < 200)
INSERT INTO run_events (run_id, seq, ts, level, service, message)
  SELECT r.id, e.k, r.started_at + e.k, 'info', 'svc1', 'archive step ' || e.k || ' of the nightly backup'
  FROM e, (SELECT id, started_at FROM runs WHERE hostname = 'bench' ORDER BY id DESC LIMIT 50) r;
SQL
echo "rows: $(sqlite3 "$WORK/state/state.db" 'SELECT count(*) FROM backups') backups, $(sqlite3 "$WORK/state/state.db" 'SELECT count(*) FROM runs') runs, $(sqlite3 "$WORK/state/state.db" 'SELECT count(*) FROM run_events') log lines"
"$BIN" --config "$WORK/etc/c.yaml" --state-dir "$WORK/state" serve 2>"$WORK/err" &
PID=$!
for _ in $(seq 1 100); do grep -q 'serving' "$WORK/err" 2>/dev/null && break; sleep 0.05; done
BASE=$(grep -o 'http://[^ ]*' "$WORK/err" | sed 's,/$,,')
RUN=$(sqlite3 "$WORK/state/state.db" "SELECT max(run_id) FROM run_events")
printf '| page | bytes | mean of %d | slowest |\n|---|---|---|---|\n' "$R"
for p in / /api/v1/status /services/svc1 /api/v1/services/svc1 /runs "/runs/$RUN" /api/v1/runs /metrics; do
    times=$(for _ in $(seq 1 "$R"); do curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$BASE$p"; done)
    echo "$times" | awk -v p="$p" '{ t += $1; if ($1 > m) m = $1; b = $2 } END { printf "| `%s` | %d | %.1f ms | %.1f ms |\n", p, b, t / NR * 1000, m * 1000 }'
done
echo "server peak RSS: $(grep VmHWM /proc/$PID/status | awk '{print $2 / 1024 " MB"}')"
