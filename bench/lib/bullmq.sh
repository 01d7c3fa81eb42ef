# shellcheck shell=bash
# BullMQ baseline for the queue-drain benchmark. Meant to be sourced:
#
#   source bench/lib/bullmq.sh
#   bullmq_drain JOBS CONCURRENCY      # prints one JSON line on stdout
#
# bullmq_drain starts its own throw-away redis-server on a free loopback port
# (6390..6399), runs bench/bullmq/drain.mjs against it and always stops that
# redis-server again (by its PID) and removes its temp dir. Progress and
# diagnostics go to stderr. Nothing but 127.0.0.1 is ever contacted (apart
# from the npm registry when node_modules has to be installed).
#
# Safe to source from scripts running under `set -euo pipefail`; it does not
# change the caller's shell options or traps (the function body is a subshell).

BULLMQ_BENCH_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"

bullmq_drain() (
  set -euo pipefail

  local jobs="${1:-}" concurrency="${2:-}"
  if [[ ! "$jobs" =~ ^[1-9][0-9]*$ || ! "$concurrency" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bullmq_drain JOBS CONCURRENCY (positive integers)" >&2
    return 2
  fi

  local root="$BULLMQ_BENCH_ROOT"
  local dir="$root/bench/bullmq"
  local redis_bin="${REDIS_SERVER:-redis-server}"
  local tmp="" redis_pid="" port=""

  _bullmq_cleanup() {
    if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
      kill -TERM "$redis_pid" 2>/dev/null || true
      local i
      for ((i = 0; i < 50; i++)); do
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$redis_pid" 2>/dev/null; then
        echo "bullmq_drain: redis-server $redis_pid ignored SIGTERM, sending SIGKILL" >&2
        kill -KILL "$redis_pid" 2>/dev/null || true
      fi
      wait "$redis_pid" 2>/dev/null || true
    fi
    if [[ -n "$tmp" && -d "$tmp" ]]; then
      rm -rf -- "$tmp"
    fi
  }
  trap _bullmq_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  for cmd in node npm "$redis_bin" redis-cli; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "bullmq_drain: '$cmd' not found in PATH" >&2; exit 1; }
  done

  # (a) npm dependencies, pinned by package-lock.json.
  if [[ ! -d "$dir/node_modules/bullmq" ]]; then
    echo "bullmq_drain: installing npm dependencies in bench/bullmq" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --silent) >&2
  fi

  # (b) A dedicated redis-server on a free loopback port.
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/bullmq-bench.XXXXXX")"
  local candidate deadline
  for candidate in 6390 6391 6392 6393 6394 6395 6396 6397 6398 6399; do
    # Something already listening there? Then skip it.
    if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
      continue
    fi
    "$redis_bin" --port "$candidate" --bind 127.0.0.1 --protected-mode yes \
      --save "" --appendonly no --daemonize no \
      --dir "$tmp" --logfile "$tmp/redis.log" \
      </dev/null >/dev/null 2>&1 &
    redis_pid=$!
    # Wait (max 10 s) until *our* server answers PING; bail out early if it
    # died (e.g. lost a race for the port) and try the next port.
    deadline=$((SECONDS + 10))
    while kill -0 "$redis_pid" 2>/dev/null && ((SECONDS < deadline)); do
      if [[ "$(redis-cli -h 127.0.0.1 -p "$candidate" ping 2>/dev/null || true)" == "PONG" ]]; then
        break
      fi
      sleep 0.05
    done
    if kill -0 "$redis_pid" 2>/dev/null &&
      redis-cli -h 127.0.0.1 -p "$candidate" info server 2>/dev/null | tr -d '\r' |
      grep -qx "process_id:$redis_pid"; then
      port="$candidate"
      break
    fi
    echo "bullmq_drain: redis-server did not come up on port $candidate:" >&2
    tail -n 5 "$tmp/redis.log" >&2 2>/dev/null || true
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  done
  if [[ -z "$port" ]]; then
    echo "bullmq_drain: could not start a dedicated redis-server on 127.0.0.1:6390-6399" >&2
    exit 1
  fi
  echo "bullmq_drain: redis-server pid $redis_pid on 127.0.0.1:$port" >&2

  # (c) The drain itself; drain.mjs has its own 300 s limit, timeout is a backstop
  # (--foreground keeps node in our process group so Ctrl-C reaches it).
  local out
  if ! out="$(timeout --foreground 330 node "$dir/drain.mjs" --port "$port" --jobs "$jobs" --concurrency "$concurrency")"; then
    echo "bullmq_drain: drain.mjs failed" >&2
    exit 1
  fi
  if [[ "$out" != \{*\} || "$out" == *$'\n'* ]]; then
    echo "bullmq_drain: unexpected output from drain.mjs: $out" >&2
    exit 1
  fi
  printf '%s\n' "$out"
  # (d) cleanup runs from the EXIT trap.
)
