#!/usr/bin/env bash
# Update benchmark: what `run update` costs over the bare
#   docker-compose pull && docker-compose up -d
# for a 3-service Compose project whose three images all changed.
#
# Usage: docs/benchmarks/update.sh [WORKDIR]
# Environment: RUNS=5 (medians are reported), KEEP=1 keep WORKDIR.
#
# A registry of its own (docker-registry on a free loopback port) serves
# three images built from a busybox rootfs; each run publishes a new build of
# all three (alternating two versions that both serve HTTP), then updates the
# stack either with the bare commands or with `run update` (soak_seconds 0,
# each service with one HTTP check, so the figures are orchestration, not the
# soak the defaults add on purpose). A `docker-compose` shim first in PATH
# records when the first `pull` starts: the time from `run update` starting
# to its first pull. Results: docs/benchmarks/update.md.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
RUNS=${RUNS:-5}
if [ $# -ge 1 ]; then WORK=$1; mkdir -p "$WORK"; else WORK=$(mktemp -d /tmp/hla-upd-bench.XXXXXX); fi
WORK=$(cd "$WORK" && pwd)
PFX=hla-bench-$$
PROJECT=$PFX
REAL_COMPOSE=$(command -v docker-compose)

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install -y $2" >&2; exit 1; }; }
need docker docker.io
need docker-compose docker-compose
need /usr/bin/docker-registry docker-registry
need busybox busybox-static

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

cargo build --release --quiet
BIN=$REPO/target/release/homelab-autopilot

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
http:
  addr: 127.0.0.1:$PORT
YML
/usr/bin/docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
cleanup() {
    "$REAL_COMPOSE" -f "$WORK/stack/docker-compose.yml" -p "$PROJECT" down --rmi all -t 1 >/dev/null 2>&1 || true
    kill "$REG_PID" 2>/dev/null || true
    docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}' | awk -v p="$PFX" 'index($0, p) {print $2}' | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

mkdir -p "$WORK/rootfs/bin"
cp "$(command -v busybox)" "$WORK/rootfs/bin/busybox"
for a in sh httpd mkdir echo; do ln -sf busybox "$WORK/rootfs/bin/$a"; done
tar -C "$WORK/rootfs" -c . | docker import - "$PFX-base:1" >/dev/null

# publish N: a new build of s1..s3 (a new label each time, so a new image).
publish() {
    local n=$1
    for s in s1 s2 s3; do
        mkdir -p "$WORK/build/$s"
        printf 'FROM %s\nLABEL build=%s\nCMD ["sh","-c","mkdir -p /www && echo %s-%s > /www/index.html && exec httpd -f -p 8080 -h /www"]\n' \
            "$PFX-base:1" "$n" "$s" "$n" > "$WORK/build/$s/Dockerfile"
        docker build -q -t "127.0.0.1:$PORT/$PFX/$s:latest" "$WORK/build/$s" >/dev/null 2>&1
        docker push -q "127.0.0.1:$PORT/$PFX/$s:latest" >/dev/null
        docker rmi "127.0.0.1:$PORT/$PFX/$s:latest" >/dev/null
    done
}

mkdir -p "$WORK/stack" "$WORK/etc" "$WORK/shim"
P1=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
P2=$((P1 + 1)); P3=$((P1 + 2))
{
    echo 'version: "2.4"'
    echo 'services:'
    i=0
    for s in s1 s2 s3; do
        p=$((P1 + i)); i=$((i + 1))
        printf '  %s:\n    image: 127.0.0.1:%s/%s/%s:latest\n    ports: ["127.0.0.1:%s:8080"]\n' "$s" "$PORT" "$PFX" "$s" "$p"
    done
} > "$WORK/stack/docker-compose.yml"
cat > "$WORK/etc/config.yaml" <<YML
updates:
  soak_seconds: 0
services:
  - name: stack
    type: docker_compose
    backup: false
    compose_file: $WORK/stack/docker-compose.yml
    compose_project: $PROJECT
    health_checks:
      - {type: http, url: "http://127.0.0.1:$P1/"}
      - {type: http, url: "http://127.0.0.1:$P2/"}
      - {type: http, url: "http://127.0.0.1:$P3/"}
YML
chmod 600 "$WORK/etc/config.yaml"
# The shim: note when the first pull starts, then run the real one.
cat > "$WORK/shim/docker-compose" <<SH
#!/bin/sh
for a in "\$@"; do [ "\$a" = pull ] && { [ -e "$WORK/first-pull" ] || date +%s.%N > "$WORK/first-pull"; }; done
exec "$REAL_COMPOSE" "\$@"
SH
chmod +x "$WORK/shim/docker-compose"

publish 0
"$REAL_COMPOSE" -f "$WORK/stack/docker-compose.yml" -p "$PROJECT" up -d >/dev/null 2>&1
HLA=("$BIN" --config "$WORK/etc/config.yaml" --state-dir "$WORK/state" -q)
"${HLA[@]}" run update >/dev/null   # warm: the state DB exists, nothing to do

: > "$WORK/bare"; : > "$WORK/ours"; : > "$WORK/first"
n=1
for r in $(seq 1 "$RUNS"); do
    publish $n; n=$((n + 1))
    t0=$(now)
    "$REAL_COMPOSE" -f "$WORK/stack/docker-compose.yml" -p "$PROJECT" pull -q >/dev/null 2>&1
    "$REAL_COMPOSE" -f "$WORK/stack/docker-compose.yml" -p "$PROJECT" up -d >/dev/null 2>&1
    echo "$(now) - $t0" | bc >> "$WORK/bare"

    publish $n; n=$((n + 1))
    rm -f "$WORK/first-pull"
    t0=$(now)
    PATH="$WORK/shim:$PATH" "${HLA[@]}" run update >/dev/null
    t1=$(now)
    echo "$t1 - $t0" | bc >> "$WORK/ours"
    echo "$(cat "$WORK/first-pull") - $t0" | bc >> "$WORK/first"
    echo "run $r: bare $(tail -1 "$WORK/bare") s, run update $(tail -1 "$WORK/ours") s, first pull after $(tail -1 "$WORK/first") s"
done
B=$(median < "$WORK/bare"); O=$(median < "$WORK/ours"); F=$(median < "$WORK/first")
echo
echo "median over $RUNS runs (3 services, all three images new):"
echo "  docker-compose pull && up -d   $B s"
echo "  run update                     $O s  (overhead $(echo "$O - $B" | bc) s)"
echo "  run update start -> first pull $F s"
