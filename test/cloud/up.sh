#!/usr/bin/env bash
# test/cloud/up.sh [STATE_DIR] - a real OpenStack (Zed, Debian bookworm packages) on this machine
# for Paddock's OpenStack provisioner tests: Keystone v3, Glance v2, Placement, Nova (api, conductor,
# scheduler, compute with fake.FakeDriver), neutron-server, RabbitMQ; every DB is SQLite in WAL mode.
#
# STATE_DIR defaults to ${PADDOCK_TEST_CLOUD:-/tmp/paddock-test-cloud}. Idempotent: if the cloud in
# STATE_DIR is up it only prints the env; if it is half up / stale it is torn down and rebuilt.
# Progress (with timings) goes to stderr; the last line on stdout is the path of the env file.
# See test/cloud/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

SD=$(ptc_state_dir "${1:-}")
T_ALL=$(ptc_now)


# Services must not see the caller's OpenStack/Python/RabbitMQ settings, and must find Debian's tools first.
for v in $(compgen -e); do
  case $v in OS_*|PYTHONPATH|PYTHONHOME|PYTHONNOUSERSITE|PYTHONSTARTUP|VIRTUAL_ENV|RABBITMQ_*|LOGS|ERL_*) unset "$v" ;; esac
done
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

PORTS="5000 9292 8778 8774 9696 5672 25672"
COMPUTE_HOST=paddock-fake-compute
# A second compute host whose driver fails every build (fake.FakeBuildAbortDriver): disabled once it
# is up, so nothing lands on it unless a test enables it to send a server to ERROR.
BROKEN_HOST=paddock-fake-broken
PACKAGES="keystone glance-api nova-api nova-conductor nova-scheduler placement-api rabbitmq-server neutron-server curl jq sqlite3"

# --------------------------------------------------------------------------- packages
ensure_packages() {
  local missing=() p t
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || { ptc_log "missing packages: ${missing[*]} (run as root to install them)"; exit 1; }
  ptc_log "installing: ${missing[*]}"
  t=$(ptc_now)
  # No daemon may be started by the packages' maintainer scripts (they would take our ports):
  # use a policy-rc.d that forbids it, unless the machine already has one.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, test/cloud/up.sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  } >"/tmp/paddock-test-cloud-apt.log" 2>&1 || rc=$?
  [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ $rc != 0 ]; then
    tail -n 30 /tmp/paddock-test-cloud-apt.log >&2; ptc_log "apt-get failed (log: /tmp/paddock-test-cloud-apt.log)"; exit 1
  fi
  ptc_log "packages installed in $(ptc_since "$t") s (log: /tmp/paddock-test-cloud-apt.log)"
}

# --------------------------------------------------------------------------- already up?
cloud_is_up() {
  local f
  [ -e "$SD/$PTC_MARKER" ] && [ -s "$SD/env" ] && [ -d "$SD/pids" ] || return 1
  for f in "$SD"/pids/*.pid; do
    [ -e "$f" ] || return 1
    ptc_group_alive "$f" || { ptc_log "$(basename "$f" .pid) is not running"; return 1; }
  done
  (
    # shellcheck disable=SC1091
    . "$SD/env"
    local body tok code
    body=$(jq -nc --arg u "$OS_USERNAME" --arg p "$OS_PASSWORD" --arg pr "$OS_PROJECT_NAME" \
      '{auth:{identity:{methods:["password"],password:{user:{name:$u,domain:{name:"Default"},password:$p}}},
        scope:{project:{name:$pr,domain:{name:"Default"}}}}}')
    tok=$(curl -sf -m 10 -D - -o /dev/null -H 'Content-Type: application/json' -d "$body" "$OS_AUTH_URL/auth/tokens" |
      awk -F': ' 'tolower($1)=="x-subject-token" { print $2 }' | tr -d '\r')
    [ -n "$tok" ] || exit 1
    for u in http://127.0.0.1:8774/v2.1/servers http://127.0.0.1:9292/v2/images http://127.0.0.1:9696/v2.0/networks; do
      code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $tok" "$u")
      [ "$code" = 200 ] || exit 1
    done
  )
}

# --------------------------------------------------------------------------- process helpers
# start NAME CMD... : run CMD in its own session/process group, record "PGID STARTTIME".
start() {
  local name=$1 pid pg; shift
  # no inherited stdout/stderr: a caller doing $(up.sh) must not wait for the daemons
  setsid "$@" >"$SD/logs/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid $(ptc_starttime "$pid")" >"$SD/pids/$name.pid"
  # the forked child becomes a group leader only once setsid(1) has run: wait for it
  local i
  for ((i = 0; i < 100; i++)); do
    pg=$(ps -o pgid= -p "$pid" | tr -d ' ')
    [ "$pg" = "$pid" ] && break
    sleep 0.02
  done
  [ "$pg" = "$pid" ] || { echo "start $name: pid $pid is not a group leader (pgid '$pg')"; return 1; }
  echo "started $name (pgid $pid)"
}

wait_http() { # URL NAME [TIMEOUT_S] : wait for any HTTP answer, fail early if NAME's group died
  local url=$1 name=$2 n=$(( ${3:-90} * 10 )) i
  for ((i = 0; i < n; i++)); do
    curl -s -m 2 -o /dev/null "$url" && return 0
    ptc_group_alive "$SD/pids/$name.pid" || { echo "$name died"; tail -n 40 "$SD/logs/$name.log"; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for $url"; tail -n 40 "$SD/logs/$name.log"; return 1
}

wal() { local db; for db in "$@"; do sqlite3 "$db" 'PRAGMA journal_mode=WAL;' >/dev/null; done; }

# Background steps: `bg_step NAME FUNC` runs FUNC in a subshell (errexit active) logging to
# logs/setup-NAME.log; `join NAME` waits for it and aborts the bring-up if it failed.
declare -A STEP_PID
bg_step() {
  local name=$1; shift
  ( t0=$(ptc_now); "$@"; ptc_since "$t0" >"$SD/logs/.setup-$name.time" ) >"$SD/logs/setup-$name.log" 2>&1 &
  STEP_PID[$name]=$!
}
join() {
  local name=$1
  if wait "${STEP_PID[$name]}"; then
    ptc_log "  $(printf '%-16s' "$name") took $(cat "$SD/logs/.setup-$name.time") s (joined at +$(ptc_since "$T_UP") s)"
  else
    ptc_log "FAILED: $name (log $SD/logs/setup-$name.log):"
    tail -n 40 "$SD/logs/setup-$name.log" >&2
    exit 1
  fi
}
fg_step() { bg_step "$@"; join "$1"; }

# --------------------------------------------------------------------------- configs
write_configs() {
  local E=$SD/etc R=$SD
  mkdir -p "$E"/{keystone,glance,placement,nova,neutron} "$R"/keystone/{fernet-keys,credential-keys} \
    "$R"/glance/{images,staging,tasks} "$R"/nova/{instances,lock} "$R"/nova-broken/instances "$R"/placement "$R"/neutron/lock \
    "$R"/rabbit/{mnesia,log,home}
  authtoken() { cat <<EOT
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000/
auth_url = http://127.0.0.1:5000/
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $PTC_SERVICE_PASSWORD
service_token_roles_required = true
EOT
  }
  svc_auth() { cat <<EOT
auth_type = password
auth_url = http://127.0.0.1:5000/v3
project_name = service
project_domain_name = Default
user_domain_name = Default
username = $1
password = $PTC_SERVICE_PASSWORD
region_name = RegionOne
EOT
  }

  cat >"$E/keystone/keystone.conf" <<EOT
[DEFAULT]
use_stderr = true
[database]
connection = sqlite:///$R/keystone/keystone.sqlite
[identity]
# test cloud: cheap bcrypt (default 12 rounds = ~0.25 s per password check/user create)
password_hash_rounds = 4
[token]
provider = fernet
[fernet_tokens]
key_repository = $R/keystone/fernet-keys
[fernet_receipts]
key_repository = $R/keystone/fernet-keys
[credential]
key_repository = $R/keystone/credential-keys
EOT

  cat >"$E/glance/glance-api.conf" <<EOT
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
# 0 = serve from the parent process (no forked worker)
workers = 0
use_stderr = true
enabled_backends = fs:file
[database]
connection = sqlite:///$R/glance/glance.sqlite
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $R/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $R/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $R/glance/tasks
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[oslo_concurrency]
lock_path = $R/glance
$(authtoken glance)
EOT

  cat >"$E/placement/placement.conf" <<EOT
[DEFAULT]
use_stderr = true
[api]
auth_strategy = keystone
[placement_database]
connection = sqlite:///$R/placement/placement.sqlite
$(authtoken placement)
EOT

  # Parts shared by the controller config (nova.conf) and the compute-only one (nova-compute.conf).
  local nova_common
  nova_common=$(cat <<EOT
[DEFAULT]
host = $COMPUTE_HOST
my_ip = 127.0.0.1
transport_url = rabbit://guest:guest@127.0.0.1:5672/
compute_driver = fake.FakeDriver
state_path = $R/nova
instances_path = $R/nova/instances
heal_instance_info_cache_interval = -1
# no random 0-60 s delay before the first periodic tasks (host discovery, resource tracker)
periodic_fuzzy_delay = 0
use_stderr = true
[oslo_concurrency]
lock_path = $R/nova/lock
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[glance]
region_name = RegionOne
[placement]
$(svc_auth placement)
[neutron]
$(svc_auth neutron)
EOT
)
  cat >"$E/nova/nova.conf" <<EOT
$nova_common
[DEFAULT]
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[api_database]
connection = sqlite:///$R/nova/nova_api.sqlite
[database]
connection = sqlite:///$R/nova/nova.sqlite
[conductor]
workers = 1
[scheduler]
workers = 1
# maps the new compute host to cell1 (instead of running nova-manage cell_v2 discover_hosts)
discover_hosts_in_cells_interval = 2
$(authtoken nova)
EOT
  # nova-compute must not get [database]/[api_database] ("No DB access allowed in nova-compute")
  printf '%s\n' "$nova_common" >"$E/nova/nova-compute.conf"
  printf '%s\n' "$nova_common" | sed -e "s/^host = .*/host = $BROKEN_HOST/" -e 's/^compute_driver = .*/compute_driver = fake.FakeBuildAbortDriver/' \
    -e "s|^state_path = .*|state_path = $R/nova-broken|" -e "s|^instances_path = .*|instances_path = $R/nova-broken/instances|" >"$E/nova/nova-compute-broken.conf"

  cat >"$E/neutron/neutron.conf" <<EOT
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9696
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = rabbit://guest:guest@127.0.0.1:5672/
api_workers = 0
rpc_workers = 0
rpc_state_report_workers = 0
# the fake OVS agent row never reports: keep it "alive" for a year
agent_down_time = 31536000
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
use_stderr = true
host = $COMPUTE_HOST
[database]
connection = sqlite:///$R/neutron/neutron.sqlite
[oslo_concurrency]
lock_path = $R/neutron/lock
[ml2]
type_drivers = flat
tenant_network_types =
mechanism_drivers = openvswitch
extension_drivers = port_security
[ml2_type_flat]
flat_networks = physnet1
[securitygroup]
enable_security_group = true
$(authtoken neutron)
EOT
}

# --------------------------------------------------------------------------- steps
step_rabbit() {
  local R=$SD/rabbit
  if ! ptc_port_open 4369; then   # our own epmd, else erl would daemonize one outside our groups
    start epmd /usr/bin/epmd -address 127.0.0.1
  fi
  echo '[].' >"$R/enabled_plugins"
  # env -i: rabbitmq-env maps un-prefixed variables (LOGS, NODENAME, ...) to RABBITMQ_*
  start rabbitmq env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$R/home" LANG=C.UTF-8 \
    RABBITMQ_CONF_ENV_FILE=/dev/null RABBITMQ_NODENAME=paddock@localhost \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    RABBITMQ_LOGS=- RABBITMQ_MNESIA_BASE="$R/mnesia" RABBITMQ_LOG_BASE="$R/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$R/enabled_plugins" RABBITMQ_PLUGINS_EXPAND_DIR="$R/plugins-expand" \
    /usr/lib/rabbitmq/bin/rabbitmq-server
  local i
  for ((i = 0; i < 900; i++)); do
    ptc_port_open 5672 && { echo "rabbit listening"; return 0; }
    ptc_group_alive "$SD/pids/rabbitmq.pid" || { echo "rabbitmq died"; tail -n 40 "$SD/logs/rabbitmq.log"; return 1; }
    sleep 0.1
  done
  echo "rabbit did not listen on 5672"; return 1
}

fernet_key() { head -c 32 /dev/urandom | base64 | tr '+/' '-_'; }

step_keystone() {
  local KC=$SD/etc/keystone/keystone.conf
  keystone-manage --config-file "$KC" db_sync
  wal "$SD/keystone/keystone.sqlite"   # rollback journal => keystone deadlocks on itself ("database is locked")
  # = keystone-manage fernet_setup + credential_setup, without two more Python start-ups
  local d
  for d in fernet-keys credential-keys; do
    fernet_key >"$SD/keystone/$d/0"; fernet_key >"$SD/keystone/$d/1"; chmod 600 "$SD/keystone/$d"/*
  done
  keystone-manage --config-file "$KC" bootstrap --bootstrap-password "$PTC_ADMIN_PASSWORD" \
    --bootstrap-username admin --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-public-url http://127.0.0.1:5000/v3/ \
    --bootstrap-internal-url http://127.0.0.1:5000/v3/
  start keystone env OS_KEYSTONE_CONFIG_FILES="$KC" uwsgi "${UWSGI[@]}" --http-socket 127.0.0.1:5000 \
    --wsgi-file /usr/bin/keystone-wsgi-public
  wait_http http://127.0.0.1:5000/v3/ keystone
}

step_glance_db() {
  glance-manage --config-file "$SD/etc/glance/glance-api.conf" db_sync
  wal "$SD/glance/glance.sqlite"
}
step_placement_db() {
  placement-manage --config-file "$SD/etc/placement/placement.conf" db sync
  wal "$SD/placement/placement.sqlite"
}

step_nova_db() {
  # = nova-manage api_db sync; cell_v2 map_cell0; cell_v2 create_cell --name cell1; db sync
  # in ONE Python process (4 separate nova-manage runs cost ~15 s of start-up on 2 busy cores)
  "$PTC_PY" - "$SD/etc/nova/nova.conf" "sqlite:///$SD/nova/nova_cell0.sqlite" <<'EOF'
import sys
conf, cell0 = sys.argv[1], sys.argv[2]
sys.argv = ['nova-manage', '--config-file', conf, 'api_db', 'sync']
from nova.cmd import manage
def ok(what, rc):
    print(what, 'rc', rc, flush=True)
    if rc not in (0, None):
        sys.exit(f'{what} failed: rc {rc}')
ok('api_db sync', manage.main())           # parses the config once
cells = manage.CellV2Commands()
ok('map_cell0', cells.map_cell0(database_connection=cell0))
ok('create_cell cell1', cells.create_cell(name='cell1', verbose=True))
ok('db sync (cell1 + cell0)', manage.DbCommands().sync())
EOF
  wal "$SD"/nova/nova_api.sqlite "$SD"/nova/nova.sqlite "$SD"/nova/nova_cell0.sqlite
}

step_neutron_db() {
  # neutron's alembic migrations ALTER constraints (unsupported by SQLite): build the schema from
  # the models, stamp it as migrated, and register a fake "Open vSwitch agent" for the compute host
  # (ML2 refuses to bind ports on a host without a live agent => PortBindingFailed).
  local conf=$SD/etc/neutron/neutron.conf db=$SD/neutron/neutron.sqlite
  "$PTC_PY" - "sqlite:///$db" <<'EOF'
import sys
from sqlalchemy import create_engine
from neutron.db.migration.models import head
md = head.get_metadata()
md.create_all(create_engine(sys.argv[1]))
print("neutron tables:", len(md.tables))
EOF
  neutron-db-manage --config-file "$conf" stamp heads
  wal "$db"
  local now cfgjson
  now=$(date -u '+%Y-%m-%d %H:%M:%S')
  cfgjson='{"bridge_mappings": {"physnet1": "br-ex"}, "tunnel_types": [], "integration_bridge": "br-int", "datapath_type": "system", "ovs_hybrid_plug": false, "devices": 0, "ovs_capabilities": {"datapath_types": ["system"], "iface_types": []}}'
  sqlite3 "$db" "INSERT INTO agents (id, agent_type, \"binary\", topic, host, admin_state_up, created_at,
      started_at, heartbeat_timestamp, configurations, load, resources_synced)
    VALUES ('$(cat /proc/sys/kernel/random/uuid)', 'Open vSwitch agent', 'neutron-openvswitch-agent', 'N/A',
      '$COMPUTE_HOST', 1, '$now', '$now', '$now', '$cfgjson', 0, 1);"
  sqlite3 "$db" "SELECT agent_type, host FROM agents;"
}

step_seed_keystone() { "$PTC_PY" "$HERE/seed.py" keystone "$SD"; }

step_start_glance() {
  start glance /usr/bin/glance-api --config-file "$SD/etc/glance/glance-api.conf"
  wait_http http://127.0.0.1:9292/ glance
}
step_start_placement() {
  start placement env OS_PLACEMENT_CONFIG_DIR="$SD/etc/placement" uwsgi "${UWSGI[@]}" \
    --http-socket 127.0.0.1:8778 --wsgi-file /usr/bin/placement-api
  wait_http http://127.0.0.1:8778/ placement
}
step_start_neutron() {
  start neutron /usr/bin/neutron-server --config-file "$SD/etc/neutron/neutron.conf"
  wait_http http://127.0.0.1:9696/ neutron
}
step_start_nova() {
  start nova-api /usr/bin/nova-api --config-file "$SD/etc/nova/nova.conf"
  wait_http http://127.0.0.1:8774/ nova-api
}
step_start_compute() {
  # nova-scheduler dies at start if the catalog has no placement endpoint yet (conductor logs an ERROR)
  start nova-conductor /usr/bin/nova-conductor --config-file "$SD/etc/nova/nova.conf"
  start nova-scheduler /usr/bin/nova-scheduler --config-file "$SD/etc/nova/nova.conf"
  # nova-compute pings nova-conductor at start and waits 10 s if the ping is lost (conductor not yet
  # consuming): wait for the conductor's service row (written just before its RPC server starts)
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(sqlite3 "$SD/nova/nova.sqlite" "SELECT count(*) FROM services WHERE \"binary\" = 'nova-conductor';" 2>/dev/null)" = 1 ] && break
    ptc_group_alive "$SD/pids/nova-conductor.pid" || { echo "nova-conductor died"; tail -n 40 "$SD/logs/nova-conductor.log"; return 1; }
    sleep 0.1
  done
  sleep 0.5
  # The nova-compute package would pull in libvirt/qemu (nova-compute-kvm); the fake driver needs
  # none of it, so run the entry point shipped in python3-nova with Debian's python.
  start nova-compute "$PTC_PY" -c 'import sys; from nova.cmd.compute import main; sys.exit(main())' \
    --config-file "$SD/etc/nova/nova-compute.conf"
  start nova-compute-broken "$PTC_PY" -c 'import sys; from nova.cmd.compute import main; sys.exit(main())' \
    --config-file "$SD/etc/nova/nova-compute-broken.conf"
}
step_seed_resources() { "$PTC_PY" "$HERE/seed.py" resources "$SD"; }
step_wait_compute() { "$PTC_PY" "$HERE/seed.py" compute "$SD"; }

# uwsgi + SQLite: one process, one thread (SQLite objects are per-thread); Connection: close
# (python-requests reuses kept-alive sockets that --http-socket already closed => resets).
UWSGI=(--plugin python3 --master --processes 1 --threads 1 --lazy-apps --die-on-term --need-app
  --buffer-size 65535 --add-header Connection:close)

# =========================================================================== main
T=$(ptc_now); ensure_packages; ptc_log "packages: ok ($(ptc_since "$T") s)"

if cloud_is_up; then
  ptc_log "cloud in $SD is already up"
  sed -n 's/^export \(OS_PASSWORD\|PADDOCK_TEST_APP_CRED_SECRET\)=.*/export \1=<hidden>/;p' "$SD/env" >&2 || true
  echo "$SD/env"
  exit 0
fi
if [ -e "$SD" ]; then
  ptc_log "stale or half-up cloud in $SD: tearing it down"
  ptc_teardown "$SD"
fi

for p in $PORTS; do
  if ptc_port_open "$p"; then
    ptc_log "port 127.0.0.1:$p is already in use (another cloud? check ss -ltnp): giving up"; exit 1
  fi
done

# On any failure: leave logs, kill what we started, keep the dir for inspection (next up.sh cleans it).
on_exit() {
  local rc=$?
  if [ $rc != 0 ]; then
    ptc_log "bring-up FAILED (rc $rc); logs in $SD/logs; stopping started services"
    ptc_kill_groups "$SD" || true
  fi
}
trap on_exit EXIT

mkdir -p "$SD"/{pids,logs,python}
touch "$SD/$PTC_MARKER"
# start-up hook for every service: SQLite "database is locked" => oslo.db DBDeadlock => retried
cp "$HERE/usercustomize.py" "$SD/python/usercustomize.py"
export PYTHONPATH=$SD/python
umask 077
rnd() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
cat >"$SD/secrets.env" <<EOT
PTC_ADMIN_PASSWORD=$(rnd)
PTC_SERVICE_PASSWORD=$(rnd)
PTC_PADDOCK_PASSWORD=$(rnd)
PTC_COMPUTE_HOST=$COMPUTE_HOST
PTC_BROKEN_HOST=$BROKEN_HOST
EOT
umask 022
# shellcheck disable=SC1091
. "$SD/secrets.env"
ptc_log "bringing up the test cloud in $SD"
T_UP=$(ptc_now)
write_configs

# DB schemas (CPU-bound Python) in parallel with RabbitMQ start-up
bg_step rabbit step_rabbit
bg_step keystone step_keystone
bg_step nova-db step_nova_db
bg_step neutron-db step_neutron_db
bg_step glance-db step_glance_db
bg_step placement-db step_placement_db

join keystone;      bg_step seed-keystone step_seed_keystone
join glance-db;     bg_step glance step_start_glance
join placement-db;  bg_step placement step_start_placement
join rabbit
join neutron-db;    bg_step neutron step_start_neutron
join nova-db;       bg_step nova-api step_start_nova
# nova-scheduler and nova-compute need the placement user, endpoint and API at start
join seed-keystone; join placement
fg_step nova-services step_start_compute
join glance; join neutron; join nova-api
fg_step seed-resources step_seed_resources
fg_step wait-compute step_wait_compute
"$PTC_PY" "$HERE/seed.py" files "$SD"

cloud_is_up || { ptc_log "cloud does not answer after bring-up"; exit 1; }
ptc_log "test cloud up in $(ptc_since "$T_ALL") s; env: $SD/env, clouds.yaml: $SD/clouds.yaml (cloud paddock-test)"
echo "$SD/env"
