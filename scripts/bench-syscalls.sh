#!/usr/bin/env bash
# Where a broker's CPU goes per delivered message: runs one roost-bench shape against a
# broker that is already running (any broker: Roost, Mosquitto, rumqttd) and counts, with
# `perf stat` attached to the broker's PID, its system calls, sends, receives, futex calls,
# epoll waits and context switches per delivered message, and messages per send.
#
#   scripts/bench-syscalls.sh PORT PID [ROOST-BENCH ARGS...]
#   scripts/bench-syscalls.sh 1883 "$(pgrep -f examples/broker)" \
#       --batch 16384 --scenario fan-in --qos 2 --messages 10000
#
# Needs `perf` (apt-get install linux-perf) with access to the broker's tracepoints (root,
# or kernel.perf_event_paranoid <= 1) and a release build of roost-bench. One run: the
# counts are per message, so they hold across run lengths better than CPU time does.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0"; exit 2; }
port=$1 pid=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${CARGO_TARGET_DIR:-$root/target}/release/roost-bench
[ -x "$bench" ] || cargo build --release -p roost-bench --manifest-path "$root/Cargo.toml" >/dev/null
work=$(mktemp -d)
perf_pid=
trap '[ -n "$perf_pid" ] && kill -INT "$perf_pid" 2>/dev/null; rm -rf "$work"' EXIT
sends='syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg'
recvs='syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_readv,syscalls:sys_enter_recvmsg'
perf stat -x, -o "$work/stat" -p "$pid" \
  -e "raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,$sends,$recvs" &
perf_pid=$!
sleep 0.3
result=$("$bench" --port "$port" --pid "$pid" --repeat 1 "$@" 2>&1) || true
kill -INT "$perf_pid"
wait "$perf_pid" 2>/dev/null || true
perf_pid=
result=$(printf '%s\n' "$result" | { grep '^scenario' || true; } | tail -1)
echo "${result:-roost-bench printed no result}"
delivered=$(printf '%s' "$result" | grep -o ' delivered=[0-9]*' | cut -d= -f2)
awk -F, -v n="${delivered:-0}" '
  $1 ~ /^[0-9.]+$/ { split($3, e, ":"); c[e[length(e)]] += $1 }
  END {
    if (n == 0) { print "no messages delivered"; exit 1 }
    s = c["sys_enter_sendto"] + c["sys_enter_write"] + c["sys_enter_writev"] + c["sys_enter_sendmsg"]
    r = c["sys_enter_recvfrom"] + c["sys_enter_read"] + c["sys_enter_readv"] + c["sys_enter_recvmsg"]
    printf "per delivered message: syscalls=%.3f sends=%.3f receives=%.3f futex=%.3f epoll_wait=%.3f context_switches=%.3f; messages per send=%.1f\n",
      c["sys_enter"] / n, s / n, r / n, c["sys_enter_futex"] / n, c["sys_enter_epoll_wait"] / n,
      c["context-switches"] / n, (s ? n / s : 0)
  }' "$work/stat"
