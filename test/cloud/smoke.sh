#!/usr/bin/env bash
# test/cloud/smoke.sh [STATE_DIR] - REST smoke test of the test cloud (curl + jq only), as user paddock:
# token (password and application credential) -> Glance image list -> boot m1.tiny on net1
# (Nova microversion >= 2.37) -> ACTIVE with an address -> delete -> 404. Prints timings.
# SMOKE_MICROVERSION overrides the compute microversion (default 2.79).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
SD=$(ptc_state_dir "${1:-}")
[ -s "$SD/env" ] || { echo "no $SD/env: run test/cloud/up.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$SD/env"
MV=${SMOKE_MICROVERSION:-2.79}
T_ALL=$(ptc_now)
say() { printf '%s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ---- token (project-scoped password auth); endpoints from the catalog
T=$(ptc_now)
body=$(jq -nc --arg u "$OS_USERNAME" --arg p "$OS_PASSWORD" --arg pr "$OS_PROJECT_NAME" \
  --arg ud "$OS_USER_DOMAIN_NAME" --arg pd "$OS_PROJECT_DOMAIN_NAME" \
  '{auth:{identity:{methods:["password"],password:{user:{name:$u,domain:{name:$ud},password:$p}}},
    scope:{project:{name:$pr,domain:{name:$pd}}}}}')
hdrs=$(mktemp); trap 'rm -f "$hdrs"' EXIT
cat_json=$(curl -sS -f -D "$hdrs" -H 'Content-Type: application/json' -d "$body" "$OS_AUTH_URL/auth/tokens") ||
  fail "password token"
TOK=$(awk -F': ' 'tolower($1)=="x-subject-token" { print $2 }' "$hdrs" | tr -d '\r')
ep() { jq -r --arg t "$1" --arg r "$OS_REGION_NAME" --arg i "$OS_INTERFACE" \
  '.token.catalog[] | select(.type==$t) | .endpoints[] | select(.region_id==$r and .interface==$i) | .url' <<<"$cat_json"; }
NOVA=$(ep compute); GLANCE=$(ep image); NEUTRON=$(ep network)
say "token: ok ($(ptc_since "$T") s) compute=$NOVA image=$GLANCE network=$NEUTRON"

if [ -n "${PADDOCK_TEST_APP_CRED_ID:-}" ]; then
  T=$(ptc_now)
  body=$(jq -nc --arg id "$PADDOCK_TEST_APP_CRED_ID" --arg s "$PADDOCK_TEST_APP_CRED_SECRET" \
    '{auth:{identity:{methods:["application_credential"],application_credential:{id:$id,secret:$s}}}}')
  code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$OS_AUTH_URL/auth/tokens")
  [ "$code" = 201 ] || fail "application credential token: HTTP $code"
  say "application credential token: ok ($(ptc_since "$T") s)"
fi

H=(-H "X-Auth-Token: $TOK" -H 'Content-Type: application/json')
NH=("${H[@]}" -H "OpenStack-API-Version: compute $MV")

# ---- Nova version document
maxmv=$(curl -sS -f "${H[@]}" "$NOVA/" | jq -r '.version.version')
say "nova: max microversion $maxmv, using $MV"

# ---- Glance
T=$(ptc_now)
images=$(curl -sS -f "${H[@]}" "$GLANCE/v2/images")
IMG=$(jq -r '.images[] | select(.name=="cirros-fake") | .id' <<<"$images")
[ -n "$IMG" ] || fail "image cirros-fake not visible: $(jq -c '[.images[].name]' <<<"$images")"
say "glance image list: $(jq -r '[.images[] | "\(.name)(\(.status))"] | join(", ")' <<<"$images") ($(ptc_since "$T") s)"

FLV=$(curl -sS -f "${NH[@]}" "$NOVA/flavors" | jq -r '.flavors[] | select(.name=="m1.tiny") | .id')
[ -n "$FLV" ] || fail "flavor m1.tiny not found"
NET=${PADDOCK_TEST_NETWORK_ID:-}
[ -n "$NET" ] || NET=$(curl -sS -f "${H[@]}" "$NEUTRON/v2.0/networks?name=net1" | jq -r '.networks[0].id')

# ---- boot -> ACTIVE with an address
T0=$(ptc_now)
req=$(jq -nc --arg i "$IMG" --arg f "$FLV" --arg n "$NET" --arg name "smoke-$$" \
  '{server:{name:$name,imageRef:$i,flavorRef:$f,networks:[{uuid:$n}]}}')
resp=$(curl -sS "${NH[@]}" -w '\n%{http_code}' -X POST "$NOVA/servers" -d "$req")
code=${resp##*$'\n'}; resp=${resp%$'\n'*}
[ "$code" = 202 ] || fail "POST /servers: HTTP $code $resp"
SID=$(jq -r '.server.id' <<<"$resp")
say "server $SID: POST 202 ($(ptc_since "$T0") s)"
cleanup() {
  if [ -n "${SID:-}" ]; then curl -s -o /dev/null "${NH[@]}" -X DELETE "$NOVA/servers/$SID" || true; fi
  rm -f "$hdrs"
}
trap cleanup EXIT
deadline=$(( $(date +%s) + 120 ))
while :; do
  s=$(curl -sS -f "${NH[@]}" "$NOVA/servers/$SID") || fail "GET /servers/$SID"
  st=$(jq -r '.server.status' <<<"$s")
  addr=$(jq -r '[.server.addresses[]?[]?.addr] | join(",")' <<<"$s")
  [ "$st" = ACTIVE ] && [ -n "$addr" ] && break
  [ "$st" = ERROR ] && fail "server ERROR: $(jq -c '.server.fault' <<<"$s")"
  [ "$(date +%s)" -lt "$deadline" ] || fail "server still $st after 120 s"
  sleep 0.2
done
boot=$(ptc_since "$T0")
say "server ACTIVE after $boot s: addresses=$(jq -c '.server.addresses' <<<"$s")"

# ---- delete -> 404
T1=$(ptc_now)
code=$(curl -sS -o /dev/null -w '%{http_code}' "${NH[@]}" -X DELETE "$NOVA/servers/$SID")
[ "$code" = 204 ] || fail "DELETE: HTTP $code"
deadline=$(( $(date +%s) + 120 ))
while :; do
  code=$(curl -sS -o /dev/null -w '%{http_code}' "${NH[@]}" "$NOVA/servers/$SID")
  [ "$code" = 404 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "server still there (HTTP $code) 120 s after DELETE"
  sleep 0.2
done
SID=
say "server deleted (404) after $(ptc_since "$T1") s"
say "smoke OK: boot->ACTIVE ${boot} s, total $(ptc_since "$T_ALL") s"
