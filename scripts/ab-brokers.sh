#!/usr/bin/env bash
# Compares two builds of Roost's example broker in turns (A, B, A, B, ...), so that the
# machine's drift over time falls on both alike: roost-bench fan-in at QoS 1 and 2 against
# each, on loopback, ROUNDS times.
#
#   scripts/ab-brokers.sh BROKER_A BROKER_B [ROUNDS]
#
# Make the two binaries with `cargo build --release --example broker` at each revision
# (copy target/release/examples/broker away in between; a git worktree for the other
# revision shares the target directory, so touch a source file before building there).
# Every broker started here is stopped by its PID.
set -euo pipefail
a=${1:?broker binary A}
b=${2:?broker binary B}
rounds=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p roost-bench --manifest-path "$root/Cargo.toml" >/dev/null
bench="${CARGO_TARGET_DIR:-$root/target}/release/roost-bench"
port=18840
pid=
work=$(mktemp -d)
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
for round in $(seq 1 "$rounds"); do
  for which in A B; do
    if [ "$which" = A ]; then broker=$a; else broker=$b; fi
    rm -rf "$work/data"
    "$broker" --listen "127.0.0.1:$port" --data-dir "$work/data" --durability none \
      --max-queued 1000000 --max-inflight 100 --max-connections 200000 --threads 1 \
      >"$work/broker.log" 2>&1 &
    pid=$!
    sleep 0.5
    for qos in 1 2; do
      figure=$("$bench" --port "$port" --scenario fan-in --qos "$qos" --messages 20000 \
        --repeat 3 2>&1 | grep -o 'delivered/s=[0-9]*' | head -1)
      echo "round $round $which QoS $qos ${figure:-no figure}"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
  done
done
