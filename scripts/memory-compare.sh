#!/usr/bin/env bash
# The memory scenarios of issue 12 §2 (crates/bench/src/memory.rs), each against a fresh
# broker process, for Roost's example broker and Mosquitto (and, with BASE_BROKER set to
# another build of the example broker, that one too). Prints a Markdown table of RSS growth
# per case. Every broker runs at its defaults (Roost: acked durability, its default store in a
# fresh folder; Mosquitto: no persistence, its default) except for loopback listeners and a
# WebSocket listener; Mosquitto is given the limits Roost has by default (max_packet_size
# 1 MiB, max_topic_alias 64), without which it refuses the alias case.
#
#   scripts/memory-compare.sh            # needs mosquitto on PATH for its column
#   BASE_BROKER=/path/to/old/broker scripts/memory-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q --example broker -p roost
cargo build --release -q -p roost-bench --bin roost-memory
ROOST=target/release/examples/broker
MEMORY=target/release/roost-memory
CASES=(ws-headers ws-partial aliases filters retained-props queue-props dup-filters trie)
PORT=18830
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Starts a broker ($1: roost|base|mosquitto) on $PORT / $PORT+1; prints its PID.
start() {
  case "$1" in
    roost|base)
      local bin=$ROOST
      [ "$1" = base ] && bin=$BASE_BROKER
      rm -rf "$WORK/data"
      "$bin" --listen "127.0.0.1:$PORT" --ws-listen "127.0.0.1:$((PORT + 1))" \
        --data-dir "$WORK/data" >"$WORK/$1.log" 2>&1 &
      ;;
    mosquitto)
      cat >"$WORK/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
max_packet_size 1048576
persistence false
listener $PORT 127.0.0.1
max_topic_alias 64
listener $((PORT + 1)) 127.0.0.1
protocol websockets
EOF
      mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
      ;;
  esac
  local pid=$!
  for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "$pid"
}

BROKERS=(roost)
[ -n "${BASE_BROKER:-}" ] && BROKERS+=(base)
command -v mosquitto >/dev/null && BROKERS+=(mosquitto)

declare -A GROWTH NOTE WHAT
for broker in "${BROKERS[@]}"; do
  for case in "${CASES[@]}"; do
    pid=$(start "$broker")
    line=$(timeout 300 "$MEMORY" --port "$PORT" --ws-port "$((PORT + 1))" --pid "$pid" \
      --only "$case" | grep "^| $case " || echo "| $case | ? | failed | |")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    WHAT[$case]=$(echo "$line" | cut -d'|' -f3 | sed 's/^ *//; s/ *$//')
    GROWTH[$broker,$case]=$(echo "$line" | cut -d'|' -f4 | sed 's/^ *//; s/ *$//')
    NOTE[$broker,$case]=$(echo "$line" | cut -d'|' -f5 | sed 's/^ *//; s/ *$//')
    PORT=$((PORT + 2))
  done
done

header="| case |"
rule="|---|"
for broker in "${BROKERS[@]}"; do header+=" $broker |"; rule+="---|"; done
echo "$header"
echo "$rule"
for case in "${CASES[@]}"; do
  row="| ${WHAT[$case]} |"
  for broker in "${BROKERS[@]}"; do
    row+=" ${GROWTH[$broker,$case]} (${NOTE[$broker,$case]}) |"
  done
  echo "$row"
done
