#!/usr/bin/env bash
# Restore-test benchmark: what `run restore-test` costs on top of the bare
# restore it performs (selection, the test's record, isolation, the
# comparison with the manifest, checks, cleanup).
#
#   archive:  `restore ID --to DIR`          vs  `run restore-test` (host service)
#   compose:  `restore ID --volumes --force` vs  `run restore-test` (a Compose
#             project serving its volume over HTTP, checked from inside the
#             copy's network)
#
# Usage: docs/benchmarks/restore-test.sh [WORKDIR]
# Environment:
#   SIZE_MB=256   data size       RUNS=3   repetitions (medians are reported)
#   BIN=...       the binary (default: target/release/homelab-autopilot,
#                 else target/debug/homelab-autopilot)
# The compose part needs dockerd, docker-compose and busybox, and root.
# Results: docs/benchmarks/restore-test.md.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
SIZE_MB=${SIZE_MB:-256}
RUNS=${RUNS:-3}
BIN=${BIN:-}
if [ -z "$BIN" ]; then
    if [ -x target/release/homelab-autopilot ]; then BIN=$REPO/target/release/homelab-autopilot
    else BIN=$REPO/target/debug/homelab-autopilot; fi
fi
if [ $# -ge 1 ]; then WORK=$1; mkdir -p "$WORK"; else WORK=$(mktemp -d /tmp/hla-rtbench.XXXXXX); fi
WORK=$(cd "$WORK" && pwd)
PROJECT=hlartbench$$

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b-a}'; }
cleanup() {
    if [ -f "$WORK/proj/docker-compose.yml" ]; then
        docker-compose -p "$PROJECT" -f "$WORK/proj/docker-compose.yml" down -v -t 1 >/dev/null 2>&1 || true
        docker image rm -f "hla-rtbench:$$" >/dev/null 2>&1 || true
    fi
    [ $# -ge 1 ] || rm -rf "$WORK"
}
[ $# -ge 1 ] || trap cleanup EXIT

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "== binary:  $BIN"

# Data: files from /usr/share up to SIZE_MB.
mkdir -p "$WORK/data/app" "$WORK/etc"
want=$((SIZE_MB * 1024 * 1024))
have=0
while IFS= read -r -d '' f; do
    [ "$have" -ge "$want" ] && break
    rel=${f#/usr/share/}
    mkdir -p "$WORK/data/app/$(dirname "$rel")"
    cp "$f" "$WORK/data/app/$rel" 2>/dev/null || continue
    have=$((have + $(stat -c %s "$f")))
done < <(find /usr/share -type f -size -8M -print0)
echo "== data:    $(du -sh "$WORK/data/app" | cut -f1) in $(find "$WORK/data/app" -type f | wc -l) files"

H() { "$BIN" --config "$WORK/etc/c.yaml" --state-dir "$WORK/state" -q "$@"; }

cat > "$WORK/etc/c.yaml" <<YAML
global:
  backup:
    root: $WORK/backups
    restore_testing:
      cleanup_delay_minutes: 0
      rto_target_minutes: 30
services:
  - name: app
    type: host
    backup_paths: [$WORK/data/app]
YAML
chmod 600 "$WORK/etc/c.yaml"
H run backup >/dev/null
bare=(); rt=(); rto=()
for _ in $(seq "$RUNS"); do
    rm -rf "$WORK/restored"; sync
    a=$(now); H restore 1 --to "$WORK/restored" >/dev/null; b=$(now)
    bare+=("$(elapsed "$a" "$b")")
    rm -rf "$WORK/restored"; sync
    a=$(now); out=$(H --json run restore-test); b=$(now)
    rt+=("$(elapsed "$a" "$b")")
    rto+=("$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["services"][0]["result"]["rto_seconds"])')")
done
mb=$(printf '%s\n' "${bare[@]}" | median); mr=$(printf '%s\n' "${rt[@]}" | median); mo=$(printf '%s\n' "${rto[@]}" | median)
echo "archive:  restore ${mb}s  restore-test ${mr}s (RTO ${mo}s)  overhead $(awk -v a="$mr" -v b="$mb" 'BEGIN {printf "%.3fs (%.2fx)", a-b, a/b}')"

# Compose: the same data in a named volume, served over HTTP.
if ! docker info >/dev/null 2>&1 || ! command -v docker-compose >/dev/null; then
    echo "compose:  skipped (no Docker engine or docker-compose)"
    exit 0
fi
mkdir -p "$WORK/rootfs/bin" "$WORK/proj"
cp "$(command -v busybox)" "$WORK/rootfs/bin/busybox"
ln -sf busybox "$WORK/rootfs/bin/sh"
tar -C "$WORK/rootfs" -c . | docker import - "hla-rtbench:$$" >/dev/null
cat > "$WORK/proj/docker-compose.yml" <<YAML
version: "3"
services:
  web:
    image: hla-rtbench:$$
    command: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/data"]
    stop_grace_period: 1s
    volumes:
      - data:/data
volumes:
  data: {}
YAML
docker-compose -p "$PROJECT" -f "$WORK/proj/docker-compose.yml" up -d >/dev/null 2>&1
c=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" | head -1)
tar -C "$WORK/data/app" -c . | docker exec -i "$c" busybox tar -x -C /data
docker exec "$c" sh -c 'echo original > /data/probe'
cat > "$WORK/etc/c.yaml" <<YAML
global:
  backup:
    root: $WORK/backups
    restore_testing:
      cleanup_delay_minutes: 0
      rto_target_minutes: 30
services:
  - name: web
    type: docker_compose
    compose_file: $WORK/proj/docker-compose.yml
    compose_project: $PROJECT
    restore_testing:
      health_checks:
        - type: http
          url: http://web:8080/probe
          body_contains: original
YAML
H run backup >/dev/null
id=$(H --json backups list --service web | python3 -c 'import json,sys; print(json.load(sys.stdin)["backups"][0]["id"])')
bare=(); rt=(); rto=()
for _ in $(seq "$RUNS"); do
    sync
    a=$(now); H restore "$id" --volumes --force >/dev/null; b=$(now)
    bare+=("$(elapsed "$a" "$b")")
    sync
    a=$(now); out=$(H --json run restore-test); b=$(now)
    rt+=("$(elapsed "$a" "$b")")
    rto+=("$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["services"][0]["result"]["rto_seconds"])')")
done
mb=$(printf '%s\n' "${bare[@]}" | median); mr=$(printf '%s\n' "${rt[@]}" | median); mo=$(printf '%s\n' "${rto[@]}" | median)
echo "compose:  restore --volumes ${mb}s  restore-test ${mr}s (RTO ${mo}s)  overhead $(awk -v a="$mr" -v b="$mb" 'BEGIN {printf "%.3fs (%.2fx)", a-b, a/b}')"
