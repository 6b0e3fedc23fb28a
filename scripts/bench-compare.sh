#!/usr/bin/env bash
# Runs roost-bench against Roost's example broker, Mosquitto and rumqttd in one go, on
# loopback, and prints every figure per broker, then a Markdown table with the ratios.
#
#   scripts/bench-compare.sh [SCALE] [REPEAT]   # SCALE multiplies message counts (default 1;
#                                               # idle connections stay 10,000: Roost's default
#                                               # max_connections, and the descriptor limit here),
#                                               # REPEAT runs per figure, medians (default 3)
#   ONLY='bfanin2|bfanout32' scripts/bench-compare.sh 1 3   # only these runs (keys below)
#
# Needs: cargo; `mosquitto` (apt-get install mosquitto) and `rumqttd` (cargo install rumqttd;
# without --locked, its lock file pins a crate that no longer builds) — a broker that is not
# installed is left out. Every broker started here is stopped by its PID on exit.
#
# Every broker at its default configuration (issue 19): Roost's example broker with only
# --listen (the port) and --data-dir (a temporary directory; its default durability, acked,
# stores nothing for these clean sessions); Mosquitto with only a `listener` line and
# `allow_anonymous true` (Mosquitto 2 refuses anonymous clients on an explicit listener
# otherwise); rumqttd with the listener, limits and connection settings its example
# configuration ships with (it has no built-in defaults). A broker that drops messages by its
# own overflow policy shows it in the "% delivered" rows: loss is a result, not an error.
#
# Shapes: rumqttc clients (the earlier figures), and raw clients (`--batch 16384 --window
# 100`): publishers writing 16 KiB batches with 100 unacknowledged QoS 1/2 messages each,
# subscribers reading 64 KiB at a time and acknowledging per read; fan-in 8 -> 1 at QoS
# 0/1/2, fan-out 1 -> 32 and 1 -> 1,000 at QoS 0; 64 B payloads, and 1 KiB for fan-in QoS 1
# and fan-out 32. Peak RSS per run is reported. Latency (QoS 0 at 5,000 msg/s) comes from
# REPEAT interleaved rounds, every broker once per round, and is the median of the rounds.
set -euo pipefail
scale=${1:-1}
repeat=${2:-3}
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
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

names=(roost)
declare -A port pid
"$target/release/examples/broker" --listen 127.0.0.1:18830 --data-dir "$work/roost" \
  >"$work/roost.log" 2>&1 &
pids+=($!); port[roost]=18830; pid[roost]=$!

mosq=$(command -v mosquitto || true)
[ -z "$mosq" ] && [ -x /usr/sbin/mosquitto ] && mosq=/usr/sbin/mosquitto
if [ -n "$mosq" ]; then
  printf 'listener 18831 127.0.0.1\nallow_anonymous true\n' >"$work/mosquitto.conf"
  "$mosq" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!); names+=(mosquitto); port[mosquitto]=18831; pid[mosquitto]=$!
else
  echo "mosquitto not found: left out (apt-get install mosquitto)" >&2
fi

rumqttd=$(command -v rumqttd || true)
[ -z "$rumqttd" ] && [ -x "$HOME/.cargo/bin/rumqttd" ] && rumqttd=$HOME/.cargo/bin/rumqttd
if [ -n "$rumqttd" ]; then
  cat >"$work/rumqttd.toml" <<'EOF'
id = 0
[router]
id = 0
max_connections = 200000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:18832"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
  "$rumqttd" -q -c "$work/rumqttd.toml" >"$work/rumqttd.log" 2>&1 &
  pids+=($!); names+=(rumqttd); port[rumqttd]=18832; pid[rumqttd]=$!
else
  echo "rumqttd not found: left out (cargo install rumqttd)" >&2
fi
sleep 1

# Idle connections first, while each broker's heap is fresh: later runs grow it, and
# connections would then reuse freed memory and hide their cost.
runs=(
  "idle|--scenario idle --connections 10000"
  "fanin0|--scenario fan-in --qos 0 --messages $((40000 * scale)) --repeat $repeat"
  "fanin1|--scenario fan-in --qos 1 --messages $((20000 * scale)) --repeat $repeat"
  "fanin2|--scenario fan-in --qos 2 --messages $((10000 * scale)) --repeat $repeat"
  "fanout0|--scenario fan-out --qos 0 --messages $((20000 * scale)) --repeat $repeat"
  "bfanin0|--batch 16384 --scenario fan-in --qos 0 --messages $((40000 * scale)) --repeat $repeat"
  "bfanin1|--batch 16384 --scenario fan-in --qos 1 --messages $((20000 * scale)) --repeat $repeat"
  "bfanin2|--batch 16384 --scenario fan-in --qos 2 --messages $((10000 * scale)) --repeat $repeat"
  "bfanout32|--batch 16384 --scenario fan-out --subscribers 32 --qos 0 --messages $((20000 * scale)) --repeat $repeat"
  "bfanout1000|--batch 16384 --scenario fan-out --subscribers 1000 --qos 0 --messages $((1000 * scale)) --repeat $repeat"
  "kfanin1|--batch 16384 --payload 1024 --scenario fan-in --qos 1 --messages $((10000 * scale)) --repeat $repeat"
  "kfanout32|--batch 16384 --payload 1024 --scenario fan-out --subscribers 32 --qos 0 --messages $((10000 * scale)) --repeat $repeat"
)
declare -A out
echo "machine: $(nproc) cores, $(uname -sr); $(date -u '+%F %H:%M UTC')"
for entry in "${runs[@]}"; do
  key=${entry%%|*}
  args=${entry#*|}
  if [ -n "${ONLY:-}" ] && ! [[ $key =~ ^($ONLY)$ ]]; then continue; fi
  echo "== $args"
  for name in "${names[@]}"; do
    # shellcheck disable=SC2086
    result=$(timeout 600 "$bench" --port "${port[$name]}" --pid "${pid[$name]}" $args \
      --timeout-s 120 2>&1) || true
    out[$key.$name]=$result
    printf '%s\n' "$result" | sed "s/^/$(printf '%-10s' "$name") /"
  done
done

# Latency: REPEAT interleaved rounds (each round runs every broker in turn, 3 s each), and
# per broker the median of its rounds' p50, p99 and p99.9. Tail latency on a shared VM moves
# by 10x between identical runs, so one run per broker compares noise; compare within a run.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
if [ -z "${ONLY:-}" ] || [[ latency =~ ^($ONLY)$ ]]; then
  args="--scenario latency --qos 0 --rate 5000 --seconds 3"
  echo "== $args, $repeat interleaved rounds"
  declare -A rounds
  for round in $(seq "$repeat"); do
    for name in "${names[@]}"; do
      # shellcheck disable=SC2086
      result=$(timeout 120 "$bench" --port "${port[$name]}" $args 2>&1 | tail -1) || true
      rounds[$name]+="$result"$'\n'
      printf '%-10s round %s: %s\n' "$name" "$round" "$result"
    done
  done
  for name in "${names[@]}"; do
    line="median of $repeat rounds:"
    for q in p50 p99 p99.9; do
      v=$(printf '%s' "${rounds[$name]}" | { grep -o " $q=[0-9]*" || true; } | cut -d= -f2 | median)
      line+=" $q=${v}us"
    done
    out[latency.$name]=$line
    printf '%-10s %s\n' "$name" "$line"
  done
fi

# Roost only: the embedded broker with in-process clients on one thread, and 100,000 idle
# connections over in-memory streams (past the file descriptor limit of a process).
if [ -z "${ONLY:-}" ]; then
  echo "== in-process (Roost only, one thread)"
  out[inproc.roost]=$("$bench" --scenario in-process --qos 0 --publishers 1 --subscribers 1 \
    --messages $((1000000 * scale)) 2>&1) || true
  echo "${out[inproc.roost]}"
  out[idle100k.roost]=$("$bench" --scenario idle-in-process --connections 100000 2>&1) || true
  echo "${out[idle100k.roost]}"
fi

# One figure from a broker's output: the value after `field=` on the last line holding it.
figure() {
  printf '%s\n' "${out[$1.$2]:-}" | { grep -o "$3=[0-9.]*" || true; } | tail -1 | cut -d= -f2
}
# A row: label, run key, field, and whether higher is better (1) or lower (0).
row() {
  local label=$1 key=$2 field=$3 higher=$4 best="" line own
  line="| $label |"
  own=$(figure "$key" roost "$field")
  for name in "${names[@]}"; do
    local v
    v=$(figure "$key" "$name" "$field")
    line+=" ${v:-–} |"
    if [ "$name" != roost ] && [ -n "$v" ]; then
      if [ -z "$best" ] || awk -v a="$v" -v b="$best" -v h="$higher" \
        'BEGIN { exit !((h == 1 && a > b) || (h == 0 && a < b)) }'; then
        best=$v
      fi
    fi
  done
  if [ -n "$own" ] && [ -n "$best" ]; then
    line+=" $(awk -v a="$own" -v b="$best" -v h="$higher" 'BEGIN {
      if (a == 0 || b == 0) { print "–"; exit }
      printf "%.2f×", (h == 1 ? a / b : b / a) }') |"
  else
    line+=" – |"
  fi
  echo "$line"
}
echo
header="| figure (throughput: median of $repeat) |"
for name in "${names[@]}"; do header+=" $name |"; done
echo "$header Roost vs the best other (> 1: Roost ahead) |"
printf '|---|'; for _ in "${names[@]}"; do printf -- '---|'; done; echo '---|'
row "fan-in QoS 0, msgs per broker-CPU-s" fanin0 per_broker_cpu_s 1
row "fan-in QoS 1, msgs per broker-CPU-s" fanin1 per_broker_cpu_s 1
row "fan-in QoS 2, msgs per broker-CPU-s" fanin2 per_broker_cpu_s 1
row "fan-out QoS 0, deliveries per broker-CPU-s" fanout0 per_broker_cpu_s 1
row "fan-in QoS 0, delivered msgs/s" fanin0 'delivered/s' 1
row "fan-in QoS 1, delivered msgs/s" fanin1 'delivered/s' 1
row "fan-in QoS 2, delivered msgs/s" fanin2 'delivered/s' 1
row "fan-out QoS 0, deliveries/s" fanout0 'delivered/s' 1
row "fan-in QoS 0, delivered/s while publishing" fanin0 'while_publishing/s' 1
row "fan-in QoS 0, % delivered while publishing" fanin0 while_publishing 1
row "fan-in QoS 1, % delivered while publishing" fanin1 while_publishing 1
row "fan-in QoS 2, % delivered while publishing" fanin2 while_publishing 1
for shape in "bfanin0|raw fan-in QoS 0" "bfanin1|raw fan-in QoS 1" "bfanin2|raw fan-in QoS 2" \
  "bfanout32|raw fan-out 1 -> 32 QoS 0" "bfanout1000|raw fan-out 1 -> 1,000 QoS 0" \
  "kfanin1|raw fan-in QoS 1, 1 KiB" "kfanout32|raw fan-out 1 -> 32 QoS 0, 1 KiB"; do
  key=${shape%%|*}; label=${shape#*|}
  row "$label, msgs per broker-CPU-s" "$key" per_broker_cpu_s 1
  row "$label, delivered msgs/s" "$key" 'delivered/s' 1
  row "$label, % delivered" "$key" delivered_pct 1
  row "$label, peak RSS KiB" "$key" peak_rss_kib 0
done
row "latency p50 at 5k msg/s, µs (median of rounds)" latency p50 0
row "latency p99 at 5k msg/s, µs (median of rounds)" latency p99 0
row "latency p99.9 at 5k msg/s, µs (median of rounds)" latency p99.9 0
row "RSS per idle connection, KiB" idle per_connection 0
row "broker CPU per connect, µs" idle broker_cpu_per_connect 0
echo
echo "Roost only:"
echo "- in-process, QoS 0, 1 publisher -> 1 subscriber, one thread: $(figure inproc roost 'delivered/s') msgs/s ($(figure inproc roost per_cpu_s) per CPU-s)"
echo "- 100,000 idle connections over in-memory streams: $(figure idle100k roost connected) held, $(figure idle100k roost per_connection) KiB RSS each"
