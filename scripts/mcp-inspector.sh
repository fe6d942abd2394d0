#!/usr/bin/env bash
# Drives switchboard's MCP server with the official MCP Inspector CLI
# (npx @modelcontextprotocol/inspector --cli), pinned: Streamable HTTP against a local
# `switchboard serve --sim` that requires a bearer token (sent with the Inspector's --header),
# and stdio against `switchboard mcp --sim`. On both, tools/list runs with --strict (tool-schema
# portability: exit 6 on an error; this script also fails on a warning), then tools, prompts and
# resources are called. Needs Node/npx and the npm registry. Loopback only. Not part of
# `cargo test`.
#
#   scripts/mcp-inspector.sh            # builds the binary first
#   SWITCHBOARD_BIN=target/release/switchboard scripts/mcp-inspector.sh
#   INSPECTOR=@modelcontextprotocol/inspector@<version> scripts/mcp-inspector.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${SWITCHBOARD_BIN:-$TARGET_DIR/debug/switchboard}
INSPECTOR=${INSPECTOR:-@modelcontextprotocol/inspector@2.12.0}
PORT=${PORT:-18089}
[ -n "${SWITCHBOARD_BIN:-}" ] || cargo build --quiet --bin switchboard

WORK=$(mktemp -d)
LOG=$WORK/serve.log
SERVER_PID=
cleanup() {
  # Stop only the server this script started, by its id.
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A token for this run: the HTTP frontend refuses /mcp without it.
TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
# The simulated calls go to this run's own folder, not the user's data directory.
DATA=$WORK/data

# SWITCHBOARD_BIN is this script's own; the engine refuses SWITCHBOARD_* names that are not settings.
env -u SWITCHBOARD_BIN \
  SWITCHBOARD_SERVER__BIND=127.0.0.1:$PORT \
  SWITCHBOARD_SERVER__API_TOKEN="$TOKEN" \
  SWITCHBOARD_STORE__DATA_DIR="$DATA" \
  "$BIN" serve --sim >"$LOG" 2>&1 &
SERVER_PID=$!

# Wait (bounded) for the listener (/healthz needs no token).
for i in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "switchboard serve exited:"; cat "$LOG"; exit 1; }
  [ "$i" = 100 ] && { echo "switchboard serve did not come up"; cat "$LOG"; exit 1; }
  sleep 0.1
done

URL=http://127.0.0.1:$PORT/mcp
# The target (URL, or command and its arguments) first: `--tool-arg` and `--header` take all
# values up to the next option.
http_inspect() {
  timeout 120 npx -y "$INSPECTOR" --cli "$URL" --transport http \
    --header "Authorization: Bearer $TOKEN" "$@"
}
stdio_inspect() {
  timeout 120 npx -y "$INSPECTOR" --cli "$BIN" mcp --sim \
    -e "SWITCHBOARD_STORE__DATA_DIR=$DATA/stdio" "$@"
}
# tools/list in --strict mode: any finding (error or warning) fails the run.
strict_list() {
  local name=$1; shift
  local err=$WORK/strict-$name.err
  if ! "$@" --method tools/list --strict >"$WORK/tools-$name.json" 2>"$err"; then
    echo "tools/list --strict over $name failed:"; cat "$err"; exit 1
  fi
  if grep -qE '^(Error|Warning): tool' "$err"; then
    echo "tools/list --strict over $name reported schema findings:"; cat "$err"; exit 1
  fi
  echo "$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).tools.length)' "$WORK/tools-$name.json") tools listed, no --strict findings"
}

echo "== Streamable HTTP without the token is refused"
# The Inspector answers any 401 over HTTP by offering interactive OAuth (its own policy: the
# server advertises none); --stored-auth-only makes it report the refusal instead.
if timeout 120 npx -y "$INSPECTOR" --cli "$URL" --transport http --stored-auth-only \
    --method tools/list >"$WORK/nokey.out" 2>&1; then
  echo "tools/list without a token succeeded"; cat "$WORK/nokey.out"; exit 1
fi
if grep -qE '401|auth_required' "$WORK/nokey.out"; then
  echo "refused: $(grep -E '401|auth_required' "$WORK/nokey.out" | head -1)"
else
  echo "unexpected:"; cat "$WORK/nokey.out"; exit 1
fi
echo "== Streamable HTTP: tools/list --strict"
strict_list http http_inspect
echo "== Streamable HTTP: tools/call telephony_call"
http_inspect --method tools/call \
  --tool-name telephony_call --tool-arg to=+12125550134 \
  --tool-arg 'goal=Book a table for 4 people this Friday at 7:30 pm under the name Alex Kim'
echo "== Streamable HTTP: tools/call telephony_list"
http_inspect --method tools/call --tool-name telephony_list
echo "== Streamable HTTP: bad argument gives a tool error"
http_inspect --method tools/call \
  --tool-name telephony_status --tool-arg callId=nope || true
echo "== Streamable HTTP: prompts/list, resources/templates/list, logging/setLevel"
http_inspect --method prompts/list
http_inspect --method resources/templates/list
http_inspect --method logging/setLevel --log-level info

echo "== stdio: tools/list --strict"
strict_list stdio stdio_inspect
echo "== stdio: tools/call telephony_list"
stdio_inspect --method tools/call --tool-name telephony_list
echo "ok"
