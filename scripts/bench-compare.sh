#!/usr/bin/env bash
# Runs roost-bench against Roost's example broker and Mosquitto (and rumqttd when it is on
# PATH) in one go, on loopback, and prints each figure per broker.
#
#   scripts/bench-compare.sh [SCALE]     # SCALE multiplies message counts (default 2)
#
# Needs: cargo, and `mosquitto` (apt-get install mosquitto). Every broker started here is
# stopped by its PID on exit. Queues are set to 100,000 messages on every broker; a run whose
# total exceeds what a subscriber's queue holds shows each broker's overflow policy.
set -euo pipefail
scale=${1:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --example broker -p roost >/dev/null
cargo build --release -p roost-bench >/dev/null
target=${CARGO_TARGET_DIR:-$root/target}
bench="$target/release/roost-bench"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$target/release/examples/broker" --listen 127.0.0.1:18830 --data-dir "$work/roost" \
  --durability none --max-queued 100000 >"$work/roost.log" 2>&1 &
pids+=($!); roost_pid=$!
declare -A brokers=([roost]="18830 $roost_pid")
if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then
  mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  printf 'listener 18831 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\n' >"$work/mosquitto.conf"
  "$mosq" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!); brokers[mosquitto]="18831 $!"
fi
if command -v rumqttd >/dev/null; then
  echo "rumqttd found but not configured by this script yet; skipped" >&2
fi
sleep 1

# Idle connections first, while each broker's heap is fresh: later runs grow it, and
# connections would then reuse freed memory and hide their cost.
runs=(
  "--scenario idle --connections $((2500 * scale))"
  "--scenario fan-in --qos 0 --messages $((10000 * scale))"
  "--scenario fan-in --qos 1 --messages $((5000 * scale))"
  "--scenario fan-in --qos 2 --messages $((2500 * scale))"
  "--scenario fan-out --qos 0 --messages $((1000 * scale))"
  "--scenario latency --qos 0 --rate 5000 --seconds 5"
)
echo "machine: $(nproc) cores, $(uname -sr); $(date -u +%F)"
for args in "${runs[@]}"; do
  echo "== $args"
  for name in "${!brokers[@]}"; do
    read -r port pid <<<"${brokers[$name]}"
    printf '%-10s ' "$name"
    # shellcheck disable=SC2086
    timeout 120 "$bench" --port "$port" --pid "$pid" $args --timeout-s 90 || true
  done
done
