#!/usr/bin/env bash
# Broker CPU per protected message against a plain one (issue 18's figure): the example
# broker at its defaults (acked durability, storage in a temporary directory), once plain
# and once with `[protect]`, in two load shapes, 1 KiB payloads, interleaved rounds.
#
#   scripts/bench-protect.sh [MESSAGES] [ROUNDS]   # per publisher (default 20000), rounds (3)
#
# Shapes:
#   inbound  - fan-in, QoS 1: 8 publishers -> 1 subscriber. Protected: the publishers are
#              devices (`roost-bench --seal`): the broker opens each envelope, checks and
#              stores the device's sequence number, then routes plaintext.
#   outbound - fan-out, QoS 0: 1 publisher -> 32 subscribers. Protected: the subscribers
#              are devices: the broker seals each delivery under the subscriber's key with
#              a fresh nonce (32 seals per message).
# The figure is delivered messages per broker-CPU-second (from /proc/PID/stat), median of
# the rounds, and the broker CPU time per delivered message. Needs cargo. Every process
# started here is stopped by its PID on exit.
set -euo pipefail
messages=${1:-20000}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --example broker -p roost >/dev/null
cargo build --release -p roost-bench >/dev/null
target=${CARGO_TARGET_DIR:-$root/target}
bench="$target/release/roost-bench"
broker="$target/release/examples/broker"
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

key=000102030405060708090a0b0c0d0e0f
for i in $(seq 0 7); do echo "bench-pub-$i 1 aes-128-gcm $key"; done >"$work/inbound.keys"
for i in $(seq 0 31); do echo "bench-sub-$i 1 aes-128-gcm $key"; done >"$work/outbound.keys"

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

# run SHAPE MODE ROUND: starts a fresh broker, runs the shape, prints "shape mode rate".
run() {
  local shape=$1 mode=$2 round=$3 port=18890
  local conf="$work/$shape-$mode-$round.toml"
  echo "data_dir = \"$work/data-$shape-$mode-$round\"" >"$conf"
  if [ "$mode" = protected ]; then
    printf '[protect]\nkey_file = "%s"\n' "$work/$shape.keys" >>"$conf"
  fi
  "$broker" --listen "127.0.0.1:$port" --config "$conf" >"$work/broker.log" 2>&1 &
  pid=$!
  wait_port "$port"
  local args=(--port "$port" --pid "$pid" --payload 1024 --messages "$messages")
  case $shape in
    inbound) args+=(--scenario fan-in --qos 1 --publishers 8) ;;
    outbound) args+=(--scenario fan-out --qos 0 --subscribers 32) ;;
  esac
  if [ "$mode" = protected ] && [ "$shape" = inbound ]; then
    args+=(--seal "$key")
  fi
  local out
  out=$("$bench" "${args[@]}")
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  local rate delivered
  rate=$(grep -o 'per_broker_cpu_s=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
  delivered=$(grep -o 'delivered=[0-9]*' <<<"$out" | head -1 | cut -d= -f2)
  echo "$shape $mode $rate $delivered"
}

results="$work/results"
for round in $(seq "$rounds"); do
  for shape in inbound outbound; do
    # Interleaved, and the order flipped every round.
    if [ $((round % 2)) -eq 1 ]; then modes="plain protected"; else modes="protected plain"; fi
    for mode in $modes; do run "$shape" "$mode" "$round" | tee -a "$results"; done
  done
done

echo
echo "$(date -u +%F) $(nproc) cores, $(uname -m); $messages messages per publisher, 1 KiB, $rounds rounds"
echo "| shape | plain msgs/broker-CPU-s | protected msgs/broker-CPU-s | broker CPU per message, plain / protected | protected ÷ plain |"
echo "|---|---|---|---|---|"
for shape in inbound outbound; do
  median() { grep "^$shape $1 " "$results" | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  p=$(median plain); q=$(median protected)
  awk -v s="$shape" -v p="$p" -v q="$q" 'BEGIN {
    printf "| %s | %.0f | %.0f | %.2f µs / %.2f µs | %.2f |\n", s, p, q, 1e6/p, 1e6/q, q/p }'
done
