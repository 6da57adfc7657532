#!/usr/bin/env bash
# Side-by-side server cost of any set of server commands under the real sockperf client.
#
# Starts every SPEC's command pinned to CPU 1, then for ROUNDS rounds runs
# ../shared/tools/sockperf-cost.sh against each in turn (client on CPU 0,
# `sockperf under-load -m 64 --mps MPS --reply-every 100` for SECS seconds) and
# prints every run and the median of each figure per server. WHAT=sys in the
# environment measures syscalls per message instead of CPU and context switches.
#
# usage: tools/scripts/sockperf-ab.sh ROUNDS udp|--tcp MPS SECS 'NAME|PORT|COMMAND' ...
# e.g.:  tools/scripts/sockperf-ab.sh 3 udp 150000 3 \
#          "bd0|31601|target/release/ringport serve --cpus 1 --listen sockperf@udp:127.0.0.1:31601" \
#          "sp|31699|sockperf server -i 127.0.0.1 -p 31699"
set -euo pipefail
[[ $# -ge 5 ]] || { sed -n '2,13p' "$0" >&2; exit 2; }
rounds=$1 proto=$2 mps=$3 secs=$4
shift 4
here=$(cd "$(dirname "$0")/../.." && pwd)
cost=${SOCKPERF_COST:-$here/../shared/tools/sockperf-cost.sh}
[[ -f $cost ]] || { echo "missing $cost" >&2; exit 1; }
out=$(mktemp -d)
names=() ports=() pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT
for spec in "$@"; do
  IFS='|' read -r name port cmd <<<"$spec"
  # shellcheck disable=SC2086 # the command is meant to be split into words
  taskset -c 1 $cmd >"$out/$name.log" 2>&1 &
  pids+=($!) names+=("$name") ports+=("$port")
done
sleep 1.5
for r in $(seq 1 "$rounds"); do
  for i in "${!names[@]}"; do
    line=$(bash "$cost" "${pids[$i]}" "${ports[$i]}" "$proto" "$mps" "$secs" "${WHAT:-cpu}")
    echo "round $r ${names[$i]} $line"
    echo "$line" >>"$out/${names[$i]}.runs"
  done
done
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
for n in "${names[@]}"; do
  printf '%s' "$n"
  for f in cpu_us_per_msg ctxsw_per_msg syscalls_per_msg p50_us p99_us; do
    grep -q "$f=" "$out/$n.runs" || continue
    printf ' %s=%s' "$f" "$(grep -o "$f=[0-9.]*" "$out/$n.runs" | cut -d= -f2 | median)"
  done
  printf ' dropped=%s\n' "$(grep -o 'dropped=[0-9]*' "$out/$n.runs" | cut -d= -f2 | awk '{s+=$1} END {print s+0}')"
done
