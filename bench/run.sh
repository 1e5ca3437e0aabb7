#!/usr/bin/env bash
# Throughput of auth-jit's token endpoints, as ratios to a reference measured
# in the same run on the same server: GET /api/health (same HTTP stack,
# routing, layers and logging; no crypto, no store). Timings on a shared
# machine are noisy; the ratios are what to compare between runs.
#
#   make bench            # or: bench/run.sh [SECONDS] [CONNECTIONS]
#
# Needs: the release binary (make install), wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-32}"
BIN=target/release/auth-jit
command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "bench: no $BIN: run make install" >&2; exit 2; }

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export AUTH_JIT_DATA_DIR="$WORK/data" AUTH_JIT_PORT=0 AUTH_JIT_RATE_LIMIT=0 AUTH_JIT_LOG_LEVEL=warn
cd "$WORK"
CALLER=$("$OLDPWD/$BIN" client add bench-caller --audience bench-api --scope read 2>/dev/null)
RECEIVER=$("$OLDPWD/$BIN" client add bench-api --audience unused 2>/dev/null)
AUTH_JIT_LOG_LEVEL=info "$OLDPWD/$BIN" serve 2> server.log &
SERVER_PID=$!
cd "$OLDPWD"
for _ in $(seq 1 200); do
  ADDR=$(grep -o 'listening on http://[0-9.:]*' "$WORK/server.log" | head -1 | sed 's|listening on ||' || true)
  [ -n "$ADDR" ] && break
  sleep 0.05
done
[ -n "${ADDR:-}" ] || { echo "bench: server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }

b64() { printf '%s' "$1" | base64 -w0; }
TOKEN=$(curl -sf -u "bench-caller:$CALLER" -H 'content-type: application/json' \
  -d '{"audience":"bench-api","scope":"read","ttl":3600}' "$ADDR/api/token" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

run() { # name, then wrk args
  local name="$1"; shift
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@")
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk -F= '/^non2xx=/ {print $2}' <<<"$out")
  printf '%-28s %12s req/s   p99 %8s   non-2xx %s\n' "$name" "$rps" "$p99" "${non2xx:-0}"

  echo "$rps" > "$WORK/$name.rps"
}

echo "auth-jit $( "$BIN" --version ) on $(nproc) cores; ${DURATION}s per endpoint, $CONNECTIONS connections"
run health "$ADDR/api/health"
BENCH_AUTH=$(b64 "bench-caller:$CALLER") BENCH_BODY='{"audience":"bench-api","scope":"read"}' \
  run issue -s bench/post.lua "$ADDR/api/token"
BENCH_AUTH=$(b64 "bench-api:$RECEIVER") BENCH_BODY="{\"token\":\"$TOKEN\",\"audience\":\"bench-api\",\"scope\":\"read\"}" \
  run verify -s bench/post.lua "$ADDR/api/token/verify"

python3 - "$WORK" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
rps = {n: float((d / f"{n}.rps").read_text()) for n in ("health", "issue", "verify")}
print(f"issue  / health = {rps['issue'] / rps['health']:.3f}")
print(f"verify / health = {rps['verify'] / rps['health']:.3f}")
PY
