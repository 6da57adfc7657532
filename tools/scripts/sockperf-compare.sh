#!/usr/bin/env bash
# Side-by-side server cost under the real sockperf client, as BENCHMARKS.md quotes it.
#
# Starts, each pinned to CPU 1: `ringport serve` with default flags, `ringport serve
# --batch-delay-us 100`, and `sockperf server`, for UDP and TCP. Then, for ROUNDS rounds,
# alternates between them running ../shared/tools/sockperf-cost.sh (client pinned to CPU 0,
# `sockperf under-load -m 64 --mps MPS --reply-every 100` for SECS seconds), once for CPU and
# context switches per message and once (separately: tracing slows syscalls) for syscalls per
# message. Prints every run and a table of medians with ratios to `sockperf server`.
#
# usage: tools/scripts/sockperf-compare.sh [ROUNDS=5] [MPS=150000] [SECS=3]
set -euo pipefail
rounds=${1:-5} mps=${2:-150000} secs=${3:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
cost=${SOCKPERF_COST:-$here/../shared/tools/sockperf-cost.sh}
bin=$here/target/release/ringport
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sockperf >/dev/null || { echo "install sockperf (apt-get install sockperf)" >&2; exit 1; }
[[ -f $cost ]] || { echo "missing $cost" >&2; exit 1; }
out=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# name port pidfile command...
start() {
  local name=$1; shift
  taskset -c 1 "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$out/$name.pid"
}
start rp_udp "$bin" serve --cpus 1 --listen sockperf@udp:127.0.0.1:21111
start rpbd_udp "$bin" serve --cpus 1 --batch-delay-us 100 --listen sockperf@udp:127.0.0.1:21112
start sp_udp sockperf server -i 127.0.0.1 -p 21113
start rp_tcp "$bin" serve --cpus 1 --listen sockperf@tcp:127.0.0.1:21121
start rpbd_tcp "$bin" serve --cpus 1 --batch-delay-us 100 --listen sockperf@tcp:127.0.0.1:21122
start sp_tcp sockperf server --tcp -i 127.0.0.1 -p 21123
sleep 1.5
declare -A port=([rp_udp]=21111 [rpbd_udp]=21112 [sp_udp]=21113 [rp_tcp]=21121 [rpbd_tcp]=21122 [sp_tcp]=21123)

for r in $(seq 1 "$rounds"); do
  for t in udp tcp; do
    for s in rp rpbd sp; do
      n=${s}_$t
      proto=$t; [[ $t == tcp ]] && proto=--tcp
      pid=$(cat "$out/$n.pid")
      c=$(bash "$cost" "$pid" "${port[$n]}" "$proto" "$mps" "$secs" cpu)
      y=$(bash "$cost" "$pid" "${port[$n]}" "$proto" "$mps" "$secs" sys)
      echo "round $r $n $c $(echo "$y" | grep -o 'syscalls_per_msg=[0-9.]*')"
      echo "$c $(echo "$y" | grep -o 'syscalls_per_msg=[0-9.]*')" >>"$out/$n.runs"
    done
  done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { grep -o "$2=[0-9.]*" "$1" | cut -d= -f2 | median; }
echo
echo "| transport | server | cpu us/msg | syscalls/msg | ctxsw/msg | p50 us | p99 us | dropped (sum) | cpu vs sockperf | syscalls vs sockperf | p99 vs sockperf |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for t in udp tcp; do
  base_cpu=$(field "$out/sp_$t.runs" cpu_us_per_msg)
  base_sys=$(field "$out/sp_$t.runs" syscalls_per_msg)
  base_p99=$(field "$out/sp_$t.runs" p99_us)
  for s in rp rpbd sp; do
    f=$out/${s}_$t.runs
    cpu=$(field "$f" cpu_us_per_msg) sys=$(field "$f" syscalls_per_msg) cs=$(field "$f" ctxsw_per_msg)
    p50=$(field "$f" p50_us) p99=$(field "$f" p99_us)
    drop=$(grep -o 'dropped=[0-9]*' "$f" | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
    case $s in rp) name="ringport (default)";; rpbd) name="ringport --batch-delay-us 100";; sp) name="sockperf server";; esac
    awk -v t="$t" -v n="$name" -v c="$cpu" -v y="$sys" -v cs="$cs" -v p50="$p50" -v p99="$p99" -v d="$drop" \
        -v bc="$base_cpu" -v by="$base_sys" -v bp="$base_p99" \
        'BEGIN { printf "| %s | %s | %.3f | %.3f | %.3f | %.1f | %.1f | %d | %.2fx | %.2fx | %.2fx |\n", t, n, c, y, cs, p50, p99, d, c/bc, y/by, p99/bp }'
  done
done
