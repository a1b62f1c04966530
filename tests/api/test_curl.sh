#!/usr/bin/env bash
# Calls the REST API the way Flint's shell clients did: curl -d with no JSON content type.
# Needs: PORT (a running `flint serve`), KEY (a user's flint-key), ADMIN (an admin's name) and
# ADMIN_PASSWORD; the server has flintbit box:bit.py (greets input "name").
set -euo pipefail
: "${PORT:?}" "${KEY:?}" "${ADMIN:?}" "${ADMIN_PASSWORD:?}"
BASE="http://127.0.0.1:$PORT"

fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect TEXT NEEDLE WHAT
  case "$1" in *"$2"*) echo "ok: $3" ;; *) fail "$3: expected $2 in: $1" ;; esac
}
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# 1. Flint's client call: -d sets application/x-www-form-urlencoded; the body is JSON all the same.
out=$(curl -s -X POST -H "flint-key: $KEY" -d '{"name":"ops"}' "$BASE/v1/bit/run/box:bit.py/sync")
expect "$out" '"exit-code":0' "sync run with curl -d"
expect "$out" '"greeting":"Hello, ops!"' "input parsed as JSON"
expect "$out" '"status":"complete"' "status complete"

# 2. No content type at all.
out=$(curl -s -X POST -H "Content-Type:" -H "flint-key: $KEY" -d '{"name":"bare"}' "$BASE/v1/bit/run/box:bit.py/sync")
expect "$out" '"greeting":"Hello, bare!"' "sync run with no content type"

# 3. The key in the query; 4. name and password headers.
out=$(curl -s -X POST -d '{"name":"q"}' "$BASE/v1/bit/run/box:bit.py/sync/5000?flint-key=$KEY")
expect "$out" '"timeout":5000' "query key and a timeout in the path"
out=$(curl -s -X POST -H "x-flint-username: $ADMIN" -H "x-flint-password: $ADMIN_PASSWORD" -d '{}' \
  "$BASE/v1/bit/run/box:bit.py/sync")
expect "$out" "\"username\":\"$ADMIN\"" "username and password headers"

# 5. The result and the log of that job.
job=$(printf '%s' "$out" | sed -n 's/.*"job-id":"\(job-[^"]*\)".*/\1/p')
[ -n "$job" ] || fail "no job-id in: $out"
expect "$(curl -s -H "flint-key: $KEY" "$BASE/v1/bit/result/$job")" '"exit-code":0' "result of $job"
expect "$(curl -s -H "flint-key: $KEY" "$BASE/v1/bit/log/$job")" '"message":"greeting world"' "log of $job"

# 6. Errors: no credentials, a wrong key, an unknown flintbit, malformed JSON, a user uploading.
[ "$(status_of -X POST -d '{}' "$BASE/v1/bit/run/box:bit.py/sync")" = 401 ] || fail "no credentials is not 401"
[ "$(status_of -X POST -H 'flint-key: wrong' -d '{}' "$BASE/v1/bit/run/box:bit.py/sync")" = 401 ] || fail "wrong key"
out=$(curl -s -X POST -H "flint-key: $KEY" -d '{}' "$BASE/v1/bit/run/box:nope.py/sync")
expect "$out" '"exit-code":-3' "unknown flintbit envelope"
[ "$(status_of -X POST -H "flint-key: $KEY" -d '{"name":' "$BASE/v1/bit/run/box:bit.py/sync")" = 400 ] \
  || fail "malformed JSON is not 400"
[ "$(status_of -X PUT -H "flint-key: $KEY" --data-binary 'x = 1' "$BASE/v1/bit/up:x.py")" = 403 ] \
  || fail "a user upload is not 403"
echo "all curl checks passed"
