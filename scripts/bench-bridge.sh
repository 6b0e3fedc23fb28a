#!/usr/bin/env bash
# Messages per second through one bridge, and the latency it adds: Roost's bridge and
# Mosquitto's, in one run, on loopback (issue 16's figures).
#
#   scripts/bench-bridge.sh [MESSAGES] [REPEAT]   # per run (default 20000), runs (default 3)
#
# For each broker, a pair: a "local" broker with a bridge (topic `bench/# out 1`, MQTT 3.1.1
# with the bridge bit, the defaults of both) to a "remote" broker. One publisher on the
# local broker, one subscriber on the remote one, 1 KiB payloads, QoS 0 and QoS 1; then a
# fixed-rate latency run (1,000 msg/s for 5 s, 64 B) through the bridge and, for
# reference, straight through the remote broker alone. Both brokers run at their defaults
# but for storage: Roost with `--durability none` (Mosquitto's default keeps nothing on
# disk either), and also with its own default (`acked`) for the bridge's guarantee's cost.
# Needs cargo and `mosquitto`. Every process started here is stopped by its PID on exit.
set -euo pipefail
messages=${1:-20000}
repeat=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --example broker -p roost >/dev/null
cargo build --release -p roost-bench >/dev/null
target=${CARGO_TARGET_DIR:-$root/target}
bench="$target/release/roost-bench"
broker="$target/release/examples/broker"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

# roost_pair NAME LOCAL_PORT REMOTE_PORT DURABILITY
roost_pair() {
  "$broker" --listen "127.0.0.1:$3" --data-dir "$work/$1-remote" --durability none \
    >"$work/$1-remote.log" 2>&1 &
  pids+=($!)
  cat >"$work/$1.toml" <<CONF
data_dir = "$work/$1-local"
durability = "$4"
[[bridge]]
connection = "bench"
address = "127.0.0.1:$3"
topic = ["bench/# out 1"]
restart_timeout = [1, 1]
CONF
  "$broker" --listen "127.0.0.1:$2" --config "$work/$1.toml" >"$work/$1-local.log" 2>&1 &
  pids+=($!)
  wait_port "$3"; wait_port "$2"
}

mosquitto_pair() {
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$3" >"$work/mq-remote.conf"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\nconnection bench\naddress 127.0.0.1:%s\ntopic bench/# out 1\n' \
    "$2" "$3" >"$work/mq-local.conf"
  "$mosquitto" -c "$work/mq-remote.conf" >"$work/mq-remote.log" 2>&1 &
  pids+=($!)
  "$mosquitto" -c "$work/mq-local.conf" >"$work/mq-local.log" 2>&1 &
  pids+=($!)
  wait_port "$3"; wait_port "$2"
}

roost_pair roost 18860 18861 none
roost_pair roost-acked 18862 18863 acked
mosquitto_pair mosquitto 18870 18871
# Each bridge is ready once a message published on its local broker reaches its remote one.
for name in roost roost-acked mosquitto; do
  lp=$([ "$name" = roost ] && echo 18860 || { [ "$name" = roost-acked ] && echo 18862 || echo 18870; })
  for _ in $(seq 60); do
    "$bench" --port "$lp" --sub-port "$((lp + 1))" --scenario latency --rate 100 --seconds 1 \
      2>/dev/null | grep -q 'received=[1-9]' && break
  done
done

declare -A local_port=([roost]=18860 [roost-acked]=18862 [mosquitto]=18870)
declare -A remote_port=([roost]=18861 [roost-acked]=18863 [mosquitto]=18871)
names=(roost roost-acked mosquitto)
declare -A result

figure() { # the median value of FIELD in roost-bench's report
  sed -n "s/.*$1[ =:]*\([0-9.]*\).*/\1/p" | head -1
}

for qos in 0 1; do
  for name in "${names[@]}"; do
    out=$("$bench" --port "${local_port[$name]}" --sub-port "${remote_port[$name]}" \
      --scenario fan-in --publishers 1 --qos "$qos" --messages "$messages" --payload 1024 \
      --repeat "$repeat" --timeout-s 120 2>&1) || true
    echo "== $name QoS $qos"; echo "$out"
    # The median's delivered/s, and the least complete run's share delivered.
    rate=$(echo "$out" | sed -n 's/^median of [0-9]*: delivered\/s=\([0-9]*\).*/\1/p')
    share=$(echo "$out" | sed -n 's/.*delivered=[0-9]* (\([0-9.]*%\)).*/\1/p' | sort -n | head -1)
    result[$name,q$qos]="${rate:-?} msg/s (least delivered: ${share:-?})"
  done
done
for name in "${names[@]}"; do
  out=$("$bench" --port "${local_port[$name]}" --sub-port "${remote_port[$name]}" \
    --scenario latency --rate 1000 --seconds 5 --qos 1 2>&1) || true
  echo "== $name latency through the bridge"; echo "$out"
  result[$name,lat]=$(echo "$out" | grep -o 'p50=[0-9]*us p99=[0-9]*us' | head -1)
  out=$("$bench" --port "${remote_port[$name]}" --scenario latency --rate 1000 --seconds 5 \
    --qos 1 2>&1) || true
  echo "== $name latency, remote broker alone"; echo "$out"
  result[$name,direct]=$(echo "$out" | grep -o 'p50=[0-9]*us p99=[0-9]*us' | head -1)
done
echo
echo "| broker | QoS 0, 1 KiB | QoS 1, 1 KiB | latency through the bridge | latency, remote alone |"
echo "|---|---|---|---|---|"
for name in "${names[@]}"; do
  echo "| $name | ${result[$name,q0]} | ${result[$name,q1]} | ${result[$name,lat]} | ${result[$name,direct]} |"
done
