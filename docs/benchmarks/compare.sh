#!/usr/bin/env bash
# Two builds of homelab-autopilot side by side, run alternately in the same
# minutes (a noisy machine slows both alike):
#   - the monitor cycle of docs/benchmarks/monitor.sh (500 HTTP checks):
#     wall time, peak RSS, start to first connection;
#   - `run backup` and `backups verify` of a copy of /usr/share (tar+zstd
#     -3, checksum verify), wall time and peak RSS.
#
#   docs/benchmarks/compare.sh OLD_BIN NEW_BIN [ROUNDS=3]
#
# Needs: both binaries built with --release, python3, curl, bc, busybox,
# /usr/bin/time. Results: docs/benchmarks/compare.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=$(realpath "$1")
NEW=$(realpath "$2")
ROUNDS=${3:-3}
MON_ROUNDS=${MON_ROUNDS:-$((ROUNDS * 2))}
WORK=$(mktemp -d /tmp/hla-compare.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"

echo "== monitor cycle (monitor.sh 500 checks, 3 runs + 15 latency runs per round, $MON_ROUNDS rounds)"
for r in $(seq "$MON_ROUNDS"); do
    for which in old new; do
        bin=$OLD; [ "$which" = new ] && bin=$NEW
        ONLY_AUTOPILOT=1 BIN=$bin LAT_RUNS=15 docs/benchmarks/monitor.sh 500 3 \
            >"$WORK/mon-$which-$r.txt" 2>&1
        # `homelab-autopilot  wall W s  cpu C s  peak RSS R MB ...`
        grep -E '^homelab-autopilot +wall' "$WORK/mon-$which-$r.txt" |
            awk -v w="$which" '{print w, $3, $10, $6}' >>"$WORK/mon-cycle.txt"
        grep 'homelab-autopilot start to first connection' "$WORK/mon-$which-$r.txt" |
            sed -E 's/.*median ([0-9.]+) ms.*/\1/' | awk -v w="$which" '{print w, $1}' >>"$WORK/mon-lat.txt"
    done
done

echo "== backup of /usr/share ($(du -sh /usr/share | cut -f1)), $ROUNDS rounds"
mkdir -p "$WORK/tree"
cp -a /usr/share "$WORK/tree/share"
tar -cf - -C "$WORK" tree | cat >/dev/null # warm the page cache
cat >"$WORK/config.yaml" <<EOF
global:
  backup:
    root: $WORK/backups
services:
  - name: bench
    type: generic
    backup_paths: [$WORK/tree]
EOF
chmod 600 "$WORK/config.yaml"
for r in $(seq "$ROUNDS"); do
    for which in old new; do
        bin=$OLD; [ "$which" = new ] && bin=$NEW
        rm -rf "$WORK/backups" "$WORK/state"
        /usr/bin/time -f "%e %M" -o "$WORK/t" "$bin" --config "$WORK/config.yaml" \
            --state-dir "$WORK/state" -q run backup >/dev/null 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
        read -r wall rss <"$WORK/t"
        echo "$which $wall $rss" >>"$WORK/backup.txt"
        a=$(find "$WORK/backups" -name '*.tar.zst' | head -1)
        /usr/bin/time -f "%e %M" -o "$WORK/t" "$bin" --config "$WORK/config.yaml" \
            --state-dir "$WORK/state" -q backups verify "$a" >/dev/null 2>"$WORK/err" || { cat "$WORK/err"; exit 1; }
        read -r wall rss <"$WORK/t"
        echo "$which $wall $rss" >>"$WORK/verify.txt"
    done
done

row() { # label file column
    local o n
    o=$(awk -v c="$3" '$1=="old" {print $c}' "$2" | median)
    n=$(awk -v c="$3" '$1=="new" {print $c}' "$2" | median)
    printf '%-44s %10s %10s %7s\n' "$1" "$o" "$n" "$(echo "scale=2; $n / $o" | bc)"
}
echo
printf '%-44s %10s %10s %7s\n' "median" "old" "new" "new/old"
row "monitor: wall s (500 checks)" "$WORK/mon-cycle.txt" 2
row "monitor: cpu s (user+sys)" "$WORK/mon-cycle.txt" 4
row "monitor: peak RSS MB" "$WORK/mon-cycle.txt" 3
row "monitor: start to first connection ms" "$WORK/mon-lat.txt" 2
row "run backup: wall s" "$WORK/backup.txt" 2
row "run backup: peak RSS KB" "$WORK/backup.txt" 3
row "backups verify: wall s" "$WORK/verify.txt" 2
row "backups verify: peak RSS KB" "$WORK/verify.txt" 3
