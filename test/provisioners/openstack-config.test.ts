// An OpenStack pool's settings and where its credentials come from (config, OS_* variables,
// clouds.yaml), without a cloud: what is wrong is named, and no secret is ever shown.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { configProblems as problems } from '../helpers/config.js';
import { parseConfig } from '../../api/config.js';
import { cloudFromEnvironment } from '../../provisioners/openstack/cloud.js';

const pool = (settings: string, extra = '') => `
machines:
  - name: cloud
    kind: openstack${extra}
    settings:
${settings
  .trim()
  .split('\n')
  .map((line) => `      ${line}`)
  .join('\n')}
`;

test('a pool parses with its defaults; it stays one entry until the server expands it from the cloud', (t) => {
  const config = parseConfig(pool('network: net1\nflavors: [m1.small]'));
  t.is(config.machines.length, 1);
  t.like(config.machines[0].settings, { network: 'net1', maxInstances: 10, ready: 'ssh', keys: 'keypair', replaceAttempts: 2, computeVersion: '2.79' });
  t.like(config.machines[0].labels, { arch: 'x86_64', kind: 'openstack' });
});

test('bad pool settings are named with their line: unknown key, no flavors, half credentials, count', (t) => {
  t.regex(problems(pool('network: net1\nflavors: [m1.small]\nflavour: x')), /line \d+: machines\[0\]\.settings\.flavour: unknown key "flavour"/);
  t.regex(problems(pool('network: net1\nflavors: []')), /machines\[0\]\.settings\.flavors/);
  const secret = 'hunter2-secret';
  const half = problems(pool(`network: net1\nflavors: [m1.small]\nauth: { authUrl: "http://k:5000/v3", username: ci, password: ${secret} }`));
  t.regex(half, /settings\.auth: give username, password and project, or applicationCredentialId/);
  t.false(half.includes(secret), 'the password is not repeated');
  t.regex(problems(pool('network: net1\nflavors: [m1.small]', '\n    count: 3')), /count: a pool of kind openstack is sized by its settings \(maxInstances\)/);
  t.regex(problems(pool('network: net1\nflavors: [m1.small]\nready: ping')), /settings\.ready/);
});

test('credentials from OS_* variables: password or application credential; what is missing is named, never a secret', (t) => {
  const password = cloudFromEnvironment({
    OS_AUTH_URL: 'http://k:5000/v3',
    OS_USERNAME: 'ci',
    OS_PASSWORD: 'pw-secret',
    OS_PROJECT_NAME: 'ci',
    OS_REGION_NAME: 'R1',
    OS_INTERFACE: 'internal',
  });
  t.deepEqual(password, {
    authUrl: 'http://k:5000/v3',
    credentials: { kind: 'password', username: 'ci', password: 'pw-secret', project: 'ci', userDomain: 'Default', projectDomain: 'Default' },
    region: 'R1',
    interface: 'internal',
  });
  const application = cloudFromEnvironment({
    OS_AUTH_URL: 'http://k:5000/v3',
    OS_APPLICATION_CREDENTIAL_ID: 'id1',
    OS_APPLICATION_CREDENTIAL_SECRET: 's3cret',
  });
  t.deepEqual(application.credentials, { kind: 'application', id: 'id1', secret: 's3cret' });
  const missing = t.throws(() => cloudFromEnvironment({ OS_AUTH_URL: 'http://k:5000/v3', OS_PASSWORD: 'pw-secret' }));
  t.regex(missing?.message ?? '', /missing username, project_name/);
  t.false(missing?.message.includes('pw-secret'));
  t.throws(() => cloudFromEnvironment({}), { message: /no auth URL/ });
});

test('credentials from clouds.yaml, by OS_CLOUD and OS_CLIENT_CONFIG_FILE', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'paddock-clouds-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'clouds.yaml');
  writeFileSync(
    file,
    `clouds:\n  lab:\n    region_name: RegionTwo\n    interface: publicURL\n    auth:\n      auth_url: http://keystone:5000/v3\n      username: ci\n      password: yaml-secret\n      project_name: ci\n      user_domain_name: Lab\n`,
  );
  const options = cloudFromEnvironment({ OS_CLOUD: 'lab', OS_CLIENT_CONFIG_FILE: file });
  t.deepEqual(options, {
    authUrl: 'http://keystone:5000/v3',
    credentials: { kind: 'password', username: 'ci', password: 'yaml-secret', project: 'ci', userDomain: 'Lab', projectDomain: 'Default' },
    region: 'RegionTwo',
    interface: 'public',
  });
  const unknown = t.throws(() => cloudFromEnvironment({ OS_CLOUD: 'other', OS_CLIENT_CONFIG_FILE: file }));
  t.regex(unknown?.message ?? '', /no cloud named "other"/);
  t.false(unknown?.message.includes('yaml-secret'));
});
