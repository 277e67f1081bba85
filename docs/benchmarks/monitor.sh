#!/usr/bin/env bash
# One `run monitor` cycle of N HTTP checks against a local server, against a
# sequential curl loop and `xargs -P 64 curl` over the same URLs.
#
#   docs/benchmarks/monitor.sh [N=500] [RUNS=5]
#
# Reports, per tool: wall time, CPU (user+sys), peak RSS (GNU time), and the
# time from exec to the server accepting the first connection. Then, for
# homelab-autopilot alone, that start-up latency over LAT_RUNS (default 30)
# more runs: min, median, 90th percentile.
# Needs: a release build (built if missing), python3, curl, /usr/bin/time.
# Results: docs/benchmarks/monitor.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-500}
RUNS=${2:-5}
LAT_RUNS=${LAT_RUNS:-30}
BIN=${BIN:-target/release/homelab-autopilot}
[ -x "$BIN" ] || cargo build --release --locked
WORK=$(mktemp -d)
trap 'kill "${SERVER_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The server: threaded, answers "ok" to every GET, and writes the time (ns)
# it accepted the first connection after each reset (POST /reset) to a file.
# Stamped at accept, in the listening thread: the check has started then,
# whatever the server's own threads take to read the request.
cat >"$WORK/server.py" <<'EOF'
import sys, time, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
first_file = sys.argv[2]
lock = threading.Lock()
state = {"first": None}
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    def get_request(self):
        conn = super().get_request()
        now = time.time_ns()
        with lock:
            if state["first"] is None:
                state["first"] = now
                open(first_file, "w").write(str(now))
        return conn
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def do_POST(self):
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()
        with lock:
            state["first"] = None
    def log_message(self, *a):
        pass
s = Server(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
EOF
# Writes the time (ns) to a file, then execs the command: the start of the
# measured process, without a shell's or time(1)'s fork in between.
cat >"$WORK/stamp.py" <<'EOF'
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(time.time_ns()))
os.execvp(sys.argv[2], sys.argv[2:])
EOF

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$WORK/server.py" "$PORT" "$WORK/first" >"$WORK/server.out" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do grep -q ready "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done

# N checks: 50 services of N/50 checks each.
PER=$(( (N + 49) / 50 ))
{
    echo "notifications:"
    echo "  enabled: false"
    echo "monitoring:"
    echo "  concurrency: 64"
    echo "services:"
    n=0
    for s in $(seq 1 50); do
        [ "$n" -ge "$N" ] && break
        echo "  - name: svc$s"
        echo "    health_checks:"
        for c in $(seq 1 "$PER"); do
            [ "$n" -ge "$N" ] && break
            echo "      - {type: http, name: c$c, url: \"http://127.0.0.1:$PORT/s$s/c$c\"}"
            echo "http://127.0.0.1:$PORT/s$s/c$c" >>"$WORK/urls"
            n=$((n + 1))
        done
    done
} >"$WORK/config.yaml"

reset() {
    sleep 0.5 # the server closes the last run's connections first
    curl -s -X POST "http://127.0.0.1:$PORT/reset" >/dev/null
    rm -f "$WORK/first"
}

# Start to first connection (ms) of one run of "$@".
latency() {
    reset
    python3 "$WORK/stamp.py" "$WORK/start" "$@" <"${IN:-/dev/null}" >/dev/null 2>"$WORK/stderr" || {
        echo "failed:"; cat "$WORK/stderr"; exit 1; }
    echo "scale=2; ($(cat "$WORK/first") - $(cat "$WORK/start")) / 1000000" | bc
}

measure() { # label, command... (stdin: the file $IN)
    local label=$1; shift
    reset
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" <"${IN:-/dev/null}" >/dev/null 2>"$WORK/stderr" || {
        echo "$label failed:"; cat "$WORK/stderr"; exit 1; }
    read -r wall user sys rss <"$WORK/time"
    printf "%-22s wall %6.3f s  cpu %6.3f s  peak RSS %6.1f MB  first connection after %6.1f ms\n" \
        "$label" "$wall" "$(echo "$user + $sys" | bc)" "$(echo "scale=1; $rss / 1024" | bc)" \
        "$(latency "$@")"
}

AUTOPILOT=("$BIN" --config "$WORK/config.yaml" --state-dir "$WORK/state" -q run monitor)
echo "$N HTTP checks against 127.0.0.1:$PORT ($(nproc) CPUs), $RUNS runs each"
"${AUTOPILOT[@]}" >/dev/null 2>&1 # state DB created, page cache warm
for i in $(seq "$RUNS"); do
    measure "homelab-autopilot" "${AUTOPILOT[@]}"
done
# ONLY_AUTOPILOT=1 leaves out the curl baselines (docs/benchmarks/compare.sh
# runs this script many times and compares two builds, not the tools).
if [ -z "${ONLY_AUTOPILOT:-}" ]; then
    for i in $(seq "$RUNS"); do
        IN=$WORK/urls measure "xargs -P 64 curl" xargs -P 64 -n 1 curl -s -o /dev/null
    done
    for i in $(seq "$RUNS"); do
        IN=$WORK/urls measure "sequential curl" sh -c 'while read -r u; do curl -s -o /dev/null "$u"; done'
    done
fi
spread() { # label: min, median, p90 of the numbers on stdin
    sort -n | awk -v label="$1" '{ v[NR] = $1 } END {
        printf "%s over %d runs: min %.1f ms, median %.1f ms, p90 %.1f ms\n",
            label, NR, v[1], v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)] }'
}
for i in $(seq "$LAT_RUNS"); do
    latency "${AUTOPILOT[@]}"
done | spread "homelab-autopilot start to first connection"
# The measurement's own share: the same launcher and server with a client
# that does nothing but connect (a static busybox starts in well under 1 ms).
if command -v busybox >/dev/null; then
    for i in $(seq "$LAT_RUNS"); do
        latency busybox nc 127.0.0.1 "$PORT"
    done | spread "baseline (busybox nc) start to first connection"
fi
