#!/usr/bin/python3
"""Seeds the paddock test cloud through the REST APIs (stdlib only, one process per phase).

Run with Debian's /usr/bin/python3 by up.sh. Phases:
  keystone  STATE_DIR  service project/users/roles, catalog, project+user `paddock`, app credential
  resources STATE_DIR  flavors, quotas, net1 + subnet, image cirros-fake
  compute   STATE_DIR  wait until nova-compute is up, mapped to cell1 and has inventory in placement
  files     STATE_DIR  write STATE_DIR/env, STATE_DIR/admin-env, STATE_DIR/clouds.yaml
Secrets come from STATE_DIR/secrets.env (written by up.sh); results go to STATE_DIR/seed.json.
(Replaces ~40 `openstack` CLI invocations at ~1.3 s each.)
"""
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request

KEYSTONE = 'http://127.0.0.1:5000/v3'
GLANCE = 'http://127.0.0.1:9292'
PLACEMENT = 'http://127.0.0.1:8778'
NOVA = 'http://127.0.0.1:8774/v2.1'
NEUTRON = 'http://127.0.0.1:9696'
REGION = 'RegionOne'

FLAVORS = [  # name, id, vcpus, ram MiB, disk GB
    ('m1.tiny', '1', 1, 512, 1),
    ('m1.small', '2', 1, 2048, 10),
    ('m1.medium', '3', 2, 4096, 20),
]
QUOTAS = {'instances': 10, 'cores': 20, 'ram': 10 * 4096}  # ~10 instances of any seeded flavor
NET_CIDR = '10.99.0.0/24'


class HttpError(Exception):
    pass


def http(method, url, token=None, body=None, headers=None, raw=None, ok=(200, 201, 202, 204)):
    hdrs = {'Accept': 'application/json', 'Connection': 'close'}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs['Content-Type'] = 'application/json'
    if raw is not None:
        data = raw
        hdrs['Content-Type'] = 'application/octet-stream'
    if token:
        hdrs['X-Auth-Token'] = token
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, rh, text = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, rh, text = e.code, e.headers, e.read()
    if status not in ok:
        raise HttpError(f'{method} {url} -> {status}: {text[:500]!r}')
    return status, rh, (json.loads(text) if text and text.strip()[:1] in (b'{', b'[') else None)


def token(user, password, project, domain='Default'):
    body = {'auth': {'identity': {'methods': ['password'], 'password': {'user': {
        'name': user, 'domain': {'name': domain}, 'password': password}}},
        'scope': {'project': {'name': project, 'domain': {'name': domain}}}}}
    _, h, b = http('POST', KEYSTONE + '/auth/tokens', body=body)
    return h['X-Subject-Token'], b['token']


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#') and '=' in line:
                k, v = line.split('=', 1)
                env[k.replace('export ', '').strip()] = v.strip().strip("'")
    return env


def dead_groups(state_dir):
    """Names of recorded process groups whose leader is gone (or a zombie)."""
    dead = []
    d = os.path.join(state_dir, 'pids')
    for f in sorted(os.listdir(d)):
        pg = open(os.path.join(d, f)).read().split()[0]
        try:
            state = open(f'/proc/{pg}/stat').read().rsplit(')', 1)[1].split()[0]
        except OSError:
            state = 'gone'
        if state in ('Z', 'X', 'gone'):
            dead.append(f[:-4])
    return dead


class Seed:
    def __init__(self, state_dir):
        self.sd = state_dir
        self.sec = load_env(os.path.join(state_dir, 'secrets.env'))
        self.path = os.path.join(state_dir, 'seed.json')
        self.data = json.load(open(self.path)) if os.path.exists(self.path) else {}

    def save(self):
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)

    def admin(self):
        return token('admin', self.sec['PTC_ADMIN_PASSWORD'], 'admin')[0]

    # ---------------------------------------------------------------- keystone
    def keystone(self):
        t = self.admin()
        K = KEYSTONE

        def create(kind, key, body):
            return http('POST', f'{K}/{kind}', t, {key: body})[2][key]['id']

        roles = {r['name']: r['id'] for r in http('GET', K + '/roles', t)[2]['roles']}
        for name in ('member', 'service'):
            if name not in roles:
                roles[name] = create('roles', 'role', {'name': name})
        service_project = create('projects', 'project', {'name': 'service', 'domain_id': 'default'})
        for svc in ('glance', 'nova', 'placement', 'neutron'):
            uid = create('users', 'user', {'name': svc, 'domain_id': 'default',
                                           'password': self.sec['PTC_SERVICE_PASSWORD']})
            for role in ('admin', 'service'):
                http('PUT', f'{K}/projects/{service_project}/users/{uid}/roles/{roles[role]}', t)
        for stype, name, url in (('image', 'glance', GLANCE), ('placement', 'placement', PLACEMENT),
                                 ('compute', 'nova', NOVA), ('network', 'neutron', NEUTRON)):
            sid = create('services', 'service', {'type': stype, 'name': name})
            for iface in ('public', 'internal', 'admin'):
                create('endpoints', 'endpoint', {'service_id': sid, 'interface': iface,
                                                 'url': url, 'region_id': REGION})
        pid = create('projects', 'project', {'name': 'paddock', 'domain_id': 'default',
                                             'description': 'Paddock provisioner tests'})
        uid = create('users', 'user', {'name': 'paddock', 'domain_id': 'default',
                                       'default_project_id': pid,
                                       'password': self.sec['PTC_PADDOCK_PASSWORD']})
        http('PUT', f'{K}/projects/{pid}/users/{uid}/roles/{roles["member"]}', t)
        # application credential: must be created by the user itself
        ut, _ = token('paddock', self.sec['PTC_PADDOCK_PASSWORD'], 'paddock')
        ac = http('POST', f'{K}/users/{uid}/application_credentials', ut, {'application_credential': {
            'name': 'paddock-test', 'description': 'paddock test cloud'}})[2]['application_credential']
        # and check it authenticates
        http('POST', K + '/auth/tokens', body={'auth': {'identity': {
            'methods': ['application_credential'],
            'application_credential': {'id': ac['id'], 'secret': ac['secret']}}}})
        self.data.update(project_id=pid, user_id=uid, service_project_id=service_project,
                         app_cred_id=ac['id'], app_cred_secret=ac['secret'])
        self.save()

    # ---------------------------------------------------------------- resources
    def resources(self):
        t = self.admin()
        pid = self.data['project_id']
        for name, fid, vcpus, ram, disk in FLAVORS:
            http('POST', NOVA + '/flavors', t, {'flavor': {
                'name': name, 'id': fid, 'vcpus': vcpus, 'ram': ram, 'disk': disk}})
        http('PUT', f'{NOVA}/os-quota-sets/{pid}', t, {'quota_set': QUOTAS})
        net = http('POST', NEUTRON + '/v2.0/networks', t, {'network': {
            'name': 'net1', 'shared': True, 'admin_state_up': True,
            'provider:network_type': 'flat', 'provider:physical_network': 'physnet1'}})[2]['network']
        sub = http('POST', NEUTRON + '/v2.0/subnets', t, {'subnet': {
            'name': 'net1-subnet', 'network_id': net['id'], 'ip_version': 4, 'cidr': NET_CIDR,
            'enable_dhcp': False}})[2]['subnet']
        img = http('POST', GLANCE + '/v2/images', t, {
            'name': 'cirros-fake', 'disk_format': 'raw', 'container_format': 'bare',
            'visibility': 'public', 'min_disk': 0, 'min_ram': 0})[2]
        payload = (b'paddock fake image\n' * 256)[:4096]
        http('PUT', f'{GLANCE}/v2/images/{img["id"]}/file', t, raw=payload)
        st = http('GET', f'{GLANCE}/v2/images/{img["id"]}', t)[2]['status']
        if st != 'active':
            raise HttpError(f'image {img["id"]} is {st}, not active')
        self.data.update(network_id=net['id'], subnet_id=sub['id'], image_id=img['id'])
        self.save()

    # ---------------------------------------------------------------- compute readiness
    def compute(self, timeout=120):
        t = self.admin()
        hosts = (self.sec['PTC_COMPUTE_HOST'], self.sec['PTC_BROKEN_HOST'])
        api_db = os.path.join(self.sd, 'nova', 'nova_api.sqlite')
        v253 = {'OpenStack-API-Version': 'compute 2.53'}
        deadline = time.time() + timeout
        last = ''
        while time.time() < deadline:
            dead = dead_groups(self.sd)
            if dead:
                raise HttpError('service(s) died: ' + ', '.join(dead) + ' (see logs/)')
            svc = http('GET', NOVA + '/os-services', t, headers=v253)[2]['services']
            up = all(any(s['binary'] == b and s['host'] == hosts[0] and s['state'] == 'up' for s in svc)
                     for b in ('nova-compute', 'nova-scheduler', 'nova-conductor'))
            up = up and any(s['binary'] == 'nova-compute' and s['host'] == hosts[1] and s['state'] == 'up' for s in svc)
            db = sqlite3.connect(f'file:{api_db}?mode=ro', uri=True, timeout=5)
            try:
                mapped = all(db.execute('select count(*) from host_mappings where host = ?',
                                        (host,)).fetchone()[0] > 0 for host in hosts)
            finally:
                db.close()
            inv = 0
            rps = http('GET', PLACEMENT + '/resource_providers', t,
                       headers={'OpenStack-API-Version': 'placement 1.14'})[2]['resource_providers']
            for rp in rps:
                inv += 'VCPU' in http('GET', f'{PLACEMENT}/resource_providers/{rp["uuid"]}/inventories',
                                      t)[2]['inventories']
            last = f'services up={up} hosts mapped={mapped} placement inventories={inv}'
            if up and mapped and inv >= 2:
                # The broken host fails every build: nothing goes there unless a test enables it.
                broken = next(s for s in svc if s['binary'] == 'nova-compute' and s['host'] == hosts[1])
                http('PUT', f"{NOVA}/os-services/{broken['id']}", t, headers=v253, body={
                    'status': 'disabled', 'disabled_reason': 'fails every build (paddock tests)'})
                return
            time.sleep(0.5)
        raise HttpError('nova-compute not ready: ' + last)

    # ---------------------------------------------------------------- files
    def files(self):
        s, d, sd = self.sec, self.data, self.sd

        def env_file(path, user, password, project, extra):
            lines = [
                '# paddock test cloud (test/cloud/up.sh) - source this file',
                f"export OS_AUTH_URL='{KEYSTONE}'",
                f"export OS_USERNAME='{user}'",
                f"export OS_PASSWORD='{password}'",
                f"export OS_PROJECT_NAME='{project}'",
                "export OS_USER_DOMAIN_NAME='Default'",
                "export OS_PROJECT_DOMAIN_NAME='Default'",
                f"export OS_REGION_NAME='{REGION}'",
                "export OS_INTERFACE='public'",
                "export OS_IDENTITY_API_VERSION='3'",
            ] + [f"export {k}='{v}'" for k, v in extra]
            tmp = path + '.tmp'
            with open(tmp, 'w') as f:
                f.write('\n'.join(lines) + '\n')
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

        common = [('PADDOCK_TEST_CLOUD_DIR', sd),
                  ('PADDOCK_TEST_CLOUDS_YAML', os.path.join(sd, 'clouds.yaml'))]
        env_file(os.path.join(sd, 'env'), 'paddock', s['PTC_PADDOCK_PASSWORD'], 'paddock', [
            ('PADDOCK_TEST_APP_CRED_ID', d['app_cred_id']),
            ('PADDOCK_TEST_APP_CRED_SECRET', d['app_cred_secret']),
            ('PADDOCK_TEST_PROJECT_ID', d['project_id']),
            ('PADDOCK_TEST_NETWORK_ID', d['network_id']),
            ('PADDOCK_TEST_IMAGE_ID', d['image_id']),
            ('PADDOCK_TEST_FLAVOR', 'm1.tiny'),
        ] + common)
        env_file(os.path.join(sd, 'admin-env'), 'admin', s['PTC_ADMIN_PASSWORD'], 'admin', common)

        def cloud(name, auth, auth_type=None):
            out = [f'  {name}:']
            if auth_type:
                out.append(f'    auth_type: {auth_type}')
            out.append('    auth:')
            out += [f'      {k}: "{v}"' for k, v in auth]
            out += [f'    region_name: {REGION}', '    interface: public', '    identity_api_version: 3']
            return out

        pw = lambda u, p, proj: [('auth_url', KEYSTONE), ('username', u), ('password', p),
                                 ('project_name', proj), ('user_domain_name', 'Default'),
                                 ('project_domain_name', 'Default')]
        y = ['# written by test/cloud/up.sh', 'clouds:']
        y += cloud('paddock-test', pw('paddock', s['PTC_PADDOCK_PASSWORD'], 'paddock'))
        y += cloud('paddock-test-appcred', [('auth_url', KEYSTONE),
                                            ('application_credential_id', d['app_cred_id']),
                                            ('application_credential_secret', d['app_cred_secret'])],
                   'v3applicationcredential')
        y += cloud('paddock-test-admin', pw('admin', s['PTC_ADMIN_PASSWORD'], 'admin'))
        path = os.path.join(sd, 'clouds.yaml')
        with open(path + '.tmp', 'w') as f:
            f.write('\n'.join(y) + '\n')
        os.chmod(path + '.tmp', 0o600)
        os.replace(path + '.tmp', path)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ('keystone', 'resources', 'compute', 'files'):
        sys.exit(__doc__)
    seed = Seed(sys.argv[2])
    getattr(seed, sys.argv[1])()


if __name__ == '__main__':
    main()
