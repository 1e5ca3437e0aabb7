#!/usr/bin/env bash
# The abuse probes of the README's security section, on the release build:
# slow request heads, an idle-connection flood, secret guessing, and
# load shedding at about twice the load the server can take (wrk -c1000).
# It takes the whole machine for about a minute: not part of `make test`.
#
#   make abuse            # or: bench/abuse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/auth-jit
[ -x "$BIN" ] || { echo "abuse: no $BIN: run make install" >&2; exit 2; }
command -v wrk >/dev/null || { echo "abuse: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
ulimit -n 16384

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Production defaults, except: no request rate limit (wrk is one client).
export AUTH_JIT_DATA_DIR="$WORK/data" AUTH_JIT_PORT=0 AUTH_JIT_RATE_LIMIT=0 AUTH_JIT_LOG_LEVEL=warn
cd "$WORK"
CALLER=$("$OLDPWD/$BIN" client add bench-caller --audience bench-api --scope read 2>/dev/null)
AUTH_JIT_LOG_LEVEL=info "$OLDPWD/$BIN" serve 2> server.log &
SERVER_PID=$!
cd "$OLDPWD"
for _ in $(seq 1 200); do
  ADDR=$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's|listening on ||' || true)
  [ -n "$ADDR" ] && break
  sleep 0.05
done
[ -n "${ADDR:-}" ] || { echo "abuse: server did not start" >&2; exit 1; }
sleep 1

python3 bench/abuse.py connections "$ADDR" "$SERVER_PID" bench-caller

# Twice the load: 1000 connections issuing tokens for 15 s.
cat > "$WORK/count.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BENCH_AUTH")
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() counts = {} end
response = function(status) counts[status] = (counts[status] or 0) + 1 end
done = function()
  local all = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do all[k] = (all[k] or 0) + v end
  end
  for k, v in pairs(all) do io.write(string.format("status %d: %d\n", k, v)) end
end
LUA
BENCH_AUTH=$(printf '%s' "bench-caller:$CALLER" | base64 -w0) BENCH_BODY='{"audience":"bench-api","scope":"read"}' \
  wrk -t2 -c1000 -d15s --latency -s "$WORK/count.lua" "$ADDR/api/token" | grep -E "status|Latency|Requests/sec|50%|99%|Socket errors"
echo "peak RSS after overload: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVER_PID/status)"
kill -0 "$SERVER_PID" && echo "server still running"
python3 bench/abuse.py guesses "$ADDR" "$SERVER_PID" bench-caller
