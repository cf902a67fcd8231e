#!/usr/bin/env bash
# Runs a command beside a throwaway Redis: `tests/with_redis.sh cargo test --workspace`.
#
# redis-server listens on 127.0.0.1 and a free port only, keeps nothing on disk (no
# RDB, no AOF; its working directory is a temporary one), and is stopped when the
# command ends, passed or failed or interrupted. The command sees its address as
# POLICY_SERVICE_TEST_REDIS=127.0.0.1:<port> (the Rust tests and tests/ read it).
set -euo pipefail

command -v redis-server >/dev/null || { echo "redis-server is missing: run make debian-deps" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is missing: run make debian-deps" >&2; exit 1; }

dir=$(mktemp -d)
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
  fi
}
trap 'stop; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A free port can be taken between the look and the bind: a few attempts.
for attempt in 1 2 3; do
  port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" --daemonize no &
  pid=$!
  for _ in $(seq 100); do
    if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      break 2
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  stop
done
if [ -z "$pid" ]; then
  echo "redis-server did not start; its log:" >&2
  cat "$dir/redis.log" >&2 || true
  exit 1
fi

export POLICY_SERVICE_TEST_REDIS="127.0.0.1:$port"
echo "redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2) on $POLICY_SERVICE_TEST_REDIS for: $*"
"$@"
