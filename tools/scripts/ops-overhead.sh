#!/usr/bin/env bash
# Server CPU per message with the operations features all on versus all off,
# under the real sockperf client (`sockperf under-load -m 64 --mps MPS --reply-every 100`,
# client on CPU 0, servers on CPU 1), alternating, ROUNDS rounds, medians.
#
# on:  allowlist 127.0.0.1/32, connection limits and rate limit, first-bytes/idle/
#      half-closed timeouts, rate alerts, handshake log to a file, /metrics endpoint
#      (scraped once a second during the run).
# off: every limit, timeout and alert at 0, no log, no admin endpoint (the default
#      loopback allowlist check stays: it cannot be switched off).
#
# usage: tools/scripts/ops-overhead.sh [ROUNDS=5] [MPS=150000] [SECS=3]
set -euo pipefail
rounds=${1:-5} mps=${2:-150000} secs=${3:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
cost=${SOCKPERF_COST:-$here/../shared/tools/sockperf-cost.sh}
bin=$here/target/release/ringport
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 1; }
out=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
on=(--allow 127.0.0.1/32 --log "$out/handshake.log" --admin 127.0.0.1:29900)
off=(--max-conns 0 --max-conns-per-source 0 --conn-rate 0 --first-bytes-timeout 0
     --idle-timeout 0 --half-closed-timeout 0 --alert-factor 0 --alert-source-denials 0)
start() { local name=$1; shift; taskset -c 1 "$bin" serve --cpus 1 --drain-timeout 1 "$@" >"$out/$name.out" 2>&1 & pids+=($!); echo $! >"$out/$name.pid"; }
start on_udp "${on[@]}" --listen sockperf@udp:127.0.0.1:29111 --listen sockperf@tcp:127.0.0.1:29112
start off_udp "${off[@]}" --listen sockperf@udp:127.0.0.1:29121 --listen sockperf@tcp:127.0.0.1:29122
sleep 1.5
( while sleep 1; do curl -s 127.0.0.1:29900/metrics >/dev/null || true; done ) & pids+=($!)
declare -A port=([on_udp]=29111 [off_udp]=29121 [on_tcp]=29112 [off_tcp]=29122)
for r in $(seq 1 "$rounds"); do
  for t in udp tcp; do
    for v in on off; do
      pid=$(cat "$out/${v}_udp.pid")
      proto=$t; [[ $t == tcp ]] && proto=--tcp
      c=$(bash "$cost" "$pid" "${port[${v}_$t]}" "$proto" "$mps" "$secs" cpu)
      echo "round $r $t $v $c"
      echo "$c" >>"$out/${v}_$t.runs"
    done
  done
done
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "| transport | operations | cpu us/msg (median) | vs off |"
echo "|---|---|---|---|"
for t in udp tcp; do
  offc=$(grep -o 'cpu_us_per_msg=[0-9.]*' "$out/off_$t.runs" | cut -d= -f2 | median)
  onc=$(grep -o 'cpu_us_per_msg=[0-9.]*' "$out/on_$t.runs" | cut -d= -f2 | median)
  awk -v t="$t" -v a="$onc" -v b="$offc" 'BEGIN { printf "| %s | all on | %.3f | %.2fx |\n| %s | all off | %.3f | 1.00x |\n", t, a, a/b, t, b }'
done
echo "handshake log lines written: $(wc -l <"$out/handshake.log")"
