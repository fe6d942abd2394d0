#!/usr/bin/env bash
# Drives switchboard's MCP server with the official MCP Inspector CLI
# (npx @modelcontextprotocol/inspector --cli): Streamable HTTP against a local
# `switchboard serve --sim`, and stdio against `switchboard mcp --sim`. Lists and calls the tools.
# Needs Node/npx and the npm registry. Not part of `cargo test`.
#
#   scripts/mcp-inspector.sh            # builds the binary first
#   SWITCHBOARD_BIN=target/release/switchboard scripts/mcp-inspector.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SWITCHBOARD_BIN:-target/debug/switchboard}
INSPECTOR=${INSPECTOR:-@modelcontextprotocol/inspector}
PORT=${PORT:-18089}
[ -n "${SWITCHBOARD_BIN:-}" ] || cargo build --quiet --bin switchboard

LOG=$(mktemp)
SERVER_PID=
cleanup() {
  # Stop only the server this script started, by its id.
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT

# No token: the Inspector CLI on npm (0.15) has no option to send an Authorization header, and
# a loopback bind may run without one. The token path is covered by tests/test_mcp_http.rs.
# SWITCHBOARD_BIN is this script's own; the engine refuses SWITCHBOARD_* names that are not settings.
env -u SWITCHBOARD_BIN SWITCHBOARD_SERVER__BIND=127.0.0.1:$PORT "$BIN" serve --sim >"$LOG" 2>&1 &
SERVER_PID=$!

# Wait (bounded) for the listener.
for i in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "switchboard serve exited:"; cat "$LOG"; exit 1; }
  [ "$i" = 100 ] && { echo "switchboard serve did not come up"; cat "$LOG"; exit 1; }
  sleep 0.1
done

# The target (URL, or command and its arguments) first: `--tool-arg` takes all values after it.
http_inspect() { timeout 120 npx -y "$INSPECTOR" --cli "$URL" --transport http "$@"; }
stdio_inspect() { timeout 120 npx -y "$INSPECTOR" --cli "$BIN" mcp --sim "$@"; }
URL=http://127.0.0.1:$PORT/mcp

echo "== Streamable HTTP: tools/list"
http_inspect --method tools/list
echo "== Streamable HTTP: tools/call telephony_call"
http_inspect --method tools/call \
  --tool-name telephony_call --tool-arg to=+12125550134 \
  --tool-arg 'goal=Book a table for 4 people this Friday at 7:30 pm under the name Alex Kim'
echo "== Streamable HTTP: tools/call telephony_list"
http_inspect --method tools/call --tool-name telephony_list
echo "== Streamable HTTP: bad argument gives a tool error"
http_inspect --method tools/call \
  --tool-name telephony_status --tool-arg callId=nope || true
echo "== Streamable HTTP: prompts/list, resources/templates/list"
http_inspect --method prompts/list
http_inspect --method resources/templates/list

echo "== stdio: tools/list"
stdio_inspect --method tools/list
echo "== stdio: tools/call telephony_list"
stdio_inspect --method tools/call --tool-name telephony_list
echo "ok"
