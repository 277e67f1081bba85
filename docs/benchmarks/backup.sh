#!/usr/bin/env bash
# Backup benchmark: archive create / full verify of homelab-autopilot against
#   create:  tar -cf - -C / TREE | zstd -3 -T0 > out
#   verify:  openssl dgst -sha256 A && zstd -dc A | tar -tf - >/dev/null
# on a ~1 GB tree of real files (a copy of /usr/share, topped up from /usr/lib).
#
# Usage: docs/benchmarks/backup.sh [WORKDIR]
#   WORKDIR   where the tree, archives and config go (default: a new /tmp/hla-bench.XXXXXX)
# Environment:
#   SIZE_MB=1024  tree size      RUNS=3  repetitions (medians are reported)
#   LEVEL=3       zstd level     KEEP=1  keep WORKDIR
#
# Part 1: the `archive::bench` test calls archive::create and archive::verify
# in-process and reports wall time and peak RSS (VmHWM).
# Part 2: the same through the binary (`run backup`, `backups verify`), under
# /usr/bin/time; skipped with a note if the release build fails.
# Results: docs/benchmarks/backup.md.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
LEVEL=${LEVEL:-3}
if [ $# -ge 1 ]; then WORK=$1; mkdir -p "$WORK"; else WORK=$(mktemp -d /tmp/hla-bench.XXXXXX); fi
WORK=$(cd "$WORK" && pwd)
TREE=$WORK/tree
TREE_REL=${TREE#/}

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install -y $2" >&2; exit 1; }; }
need zstd zstd
need openssl openssl
need tar tar
need cargo cargo
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time: apt-get install -y time" >&2; exit 1; }

cleanup() { if [ -z "${KEEP:-}" ] && [ $# -eq 0 ]; then rm -rf "$WORK"; fi; }
[ $# -ge 1 ] || trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b-a}'; }
kb2mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

echo "== machine"
echo "nproc:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "sha_ni:  $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:  $(uname -r)"
echo "tools:   $(zstd --version | head -1); $(tar --version | head -1); $(openssl version); $(rustc --version)"

echo "== tree ($SIZE_MB MB) in $TREE"
if [ ! -d "$TREE" ]; then
    mkdir -p "$TREE"
    cp -a /usr/share "$TREE/share"
    have=$(du -sb "$TREE" | cut -f1)
    want=$((SIZE_MB * 1024 * 1024))
    if [ "$have" -lt "$want" ]; then
        # Top up from /usr/lib in find order until the tree has SIZE_MB.
        (cd /usr/lib && find . -mindepth 1 \( -type f -o -type l -o -type d \) -printf '%s\t%p\n') |
            awk -F'\t' -v need=$((want - have)) 'sum < need { print $2; if ($1 > 0) sum += $1 }' \
                >"$WORK/lib.list"
        mkdir -p "$TREE/lib"
        tar -C /usr/lib --no-recursion -cf - -T "$WORK/lib.list" | tar -C "$TREE/lib" -xf -
    fi
fi
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
echo "files: $(find "$TREE" -type f | wc -l), symlinks: $(find "$TREE" -type l | wc -l), dirs: $(find "$TREE" -type d | wc -l), apparent size: $((TREE_BYTES / 1024 / 1024)) MiB"
# Warm the page cache so that every contender reads from memory.
tar -cf - -C / "$TREE_REL" | cat >/dev/null

echo "== build"
cargo build --release --lib --tests >/dev/null 2>&1 || cargo test --release --lib --no-run
BIN_OK=1
cargo build --release >/dev/null 2>&1 || { BIN_OK=0; echo "note: cargo build --release failed; part 2 skipped"; }

echo "== part 1: archive::create / archive::verify in-process ($RUNS runs)"
MICRO=$WORK/micro
mkdir -p "$MICRO"
: >"$WORK/micro.txt"
for i in $(seq "$RUNS"); do
    HLA_BENCH_TREE=$TREE HLA_BENCH_OUT=$MICRO HLA_BENCH_KEEP=1 HLA_BENCH_LEVEL=$LEVEL \
        cargo test --release --lib archive::bench -- --ignored --nocapture --test-threads=1 2>/dev/null |
        grep -o 'BENCH .*' | tee -a "$WORK/micro.txt"
done
field() { grep "phase=$1 " "$WORK/micro.txt" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }
OUR_CREATE=$(field create seconds | median)
OUR_CREATE_RSS=$(field create peak_rss_mb | sort -g | tail -1)
OUR_SIZE=$(field create size | tail -1)
OUR_IN=$(field create bytes_in | tail -1)
OUR_VERIFY=$(field verify seconds | median)
OUR_VERIFY_RSS=$(field verify peak_rss_mb | sort -g | tail -1)
OUR_QUICK=$(field verify_checksum seconds | median)
ARCHIVE=$MICRO/bench.tar.zst

echo "== baseline create: tar -cf - | zstd -$LEVEL -T0 ($RUNS runs)"
: >"$WORK/base_create.txt"
for i in $(seq "$RUNS"); do
    t0=$(now)
    /usr/bin/time -f %M -o "$WORK/tar.rss" tar -cf - -C / "$TREE_REL" |
        /usr/bin/time -f %M -o "$WORK/zstd.rss" zstd -q -"$LEVEL" -T0 -f -o "$WORK/base.tar.zst"
    t1=$(now)
    echo "$(elapsed "$t0" "$t1") $(cat "$WORK/tar.rss") $(cat "$WORK/zstd.rss")" | tee -a "$WORK/base_create.txt"
done
BASE_CREATE=$(cut -d' ' -f1 "$WORK/base_create.txt" | median)
BASE_CREATE_RSS=$(awk '{s=$2+$3; if (s>m) m=s} END {printf "%.1f", m/1024}' "$WORK/base_create.txt")
BASE_SIZE=$(stat -c %s "$WORK/base.tar.zst")

echo "== baseline verify: openssl dgst -sha256 A && zstd -dc A | tar -tf - (on our archive, $RUNS runs)"
: >"$WORK/base_verify.txt"
for i in $(seq "$RUNS"); do
    t0=$(now)
    /usr/bin/time -f %M -o "$WORK/openssl.rss" openssl dgst -sha256 "$ARCHIVE" >/dev/null &&
        /usr/bin/time -f %M -o "$WORK/zstdd.rss" zstd -q -dc "$ARCHIVE" |
        /usr/bin/time -f %M -o "$WORK/tart.rss" tar -tf - >/dev/null
    t1=$(now)
    echo "$(elapsed "$t0" "$t1") $(cat "$WORK/openssl.rss") $(cat "$WORK/zstdd.rss") $(cat "$WORK/tart.rss")" |
        tee -a "$WORK/base_verify.txt"
done
BASE_VERIFY=$(cut -d' ' -f1 "$WORK/base_verify.txt" | median)
BASE_VERIFY_RSS=$(awk '{s=$3+$4; if ($2>s) s=$2; if (s>m) m=s} END {printf "%.1f", m/1024}' "$WORK/base_verify.txt")

echo "== part 2: the binary (run backup / backups verify)"
E2E_CREATE=skipped E2E_CREATE_RSS=- E2E_VERIFY=skipped E2E_VERIFY_RSS=-
if [ "$BIN_OK" = 1 ]; then
    BINARY=$REPO/target/release/homelab-autopilot
    CFG=$WORK/config.yaml
    cat >"$CFG" <<EOF
global:
  backup:
    root: $WORK/backups
    compression_level: $LEVEL
    threads: 0
services:
  - name: bench
    type: generic
    backup_paths: [$TREE]
EOF
    chmod 600 "$CFG"
    rm -rf "$WORK/backups" "$WORK/state"
    mkdir -p "$WORK/state"
    t0=$(now)
    if /usr/bin/time -v -o "$WORK/e2e_create.time" "$BINARY" --config "$CFG" --state-dir "$WORK/state" run backup \
        >"$WORK/e2e_create.log" 2>&1; then
        t1=$(now)
        E2E_CREATE=$(elapsed "$t0" "$t1")
        E2E_CREATE_RSS=$(kb2mb "$(awk -F: '/Maximum resident/ {print $2}' "$WORK/e2e_create.time")")
        A=$(find "$WORK/backups" -name '*.tar.zst' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
        t0=$(now)
        if [ -n "$A" ] && /usr/bin/time -v -o "$WORK/e2e_verify.time" "$BINARY" --config "$CFG" --state-dir "$WORK/state" \
            backups verify "$A" >"$WORK/e2e_verify.log" 2>&1; then
            t1=$(now)
            E2E_VERIFY=$(elapsed "$t0" "$t1")
            E2E_VERIFY_RSS=$(kb2mb "$(awk -F: '/Maximum resident/ {print $2}' "$WORK/e2e_verify.time")")
        else
            echo "note: backups verify failed:"; tail -5 "$WORK/e2e_verify.log"
        fi
    else
        echo "note: run backup failed:"; tail -5 "$WORK/e2e_create.log"
    fi
fi

echo
echo "== results (medians of $RUNS runs; tree $((OUR_IN / 1000000)) MB of file data)"
printf '%-44s %9s %9s %11s\n' "" "wall s" "vs base" "peak RSS MB"
printf '%-44s %9s %9s %11s\n' "create: archive::create (level $LEVEL, T0)" "$OUR_CREATE" "$(ratio "$OUR_CREATE" "$BASE_CREATE")" "$OUR_CREATE_RSS"
printf '%-44s %9s %9s %11s\n' "create: tar | zstd -$LEVEL -T0" "$BASE_CREATE" "1.00" "$BASE_CREATE_RSS"
printf '%-44s %9s %9s %11s\n' "create: homelab-autopilot run backup" "$E2E_CREATE" "-" "$E2E_CREATE_RSS"
printf '%-44s %9s %9s %11s\n' "verify: archive::verify (one pass)" "$OUR_VERIFY" "$(ratio "$OUR_VERIFY" "$BASE_VERIFY")" "$OUR_VERIFY_RSS"
printf '%-44s %9s %9s %11s\n' "verify: openssl dgst && zstd -dc | tar -t" "$BASE_VERIFY" "1.00" "$BASE_VERIFY_RSS"
printf '%-44s %9s %9s %11s\n' "verify: homelab-autopilot backups verify" "$E2E_VERIFY" "-" "$E2E_VERIFY_RSS"
printf '%-44s %9s\n' "quick check: archive::verify_checksum" "$OUR_QUICK"
echo "compression ratio (file data / archive): ours $(ratio "$OUR_IN" "$OUR_SIZE"), tar|zstd $(ratio "$OUR_IN" "$BASE_SIZE")"
echo "archive size: ours $OUR_SIZE bytes, tar|zstd $BASE_SIZE bytes"
echo "targets: create <= 1.15x baseline; verify <= 1.00x baseline; peak RSS < 96 MB"
