// `npm run test:cloud`: the OpenStack client against a real OpenStack (Keystone, Glance, Nova with the fake driver,
// Neutron) that test/cloud/up.sh brings up on this machine from Debian packages.
import { execFile } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import test from 'ava';
import { OpenStackClient, OpenStackError, type CloudOptions } from '../../provisioners/openstack/client.js';
import { cloudFromEnvironment } from '../../provisioners/openstack/cloud.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);
let env: Record<string, string>;
let options: CloudOptions;
let client: OpenStackClient;

test.before(async () => {
  const { stdout } = await run('bash', [path.resolve(import.meta.dirname, 'up.sh')], { maxBuffer: 16 * 1024 * 1024, timeout: 15 * 60_000 });
  const envFile = stdout.trim().split('\n').pop()!;
  env = Object.fromEntries(
    readFileSync(envFile, 'utf8')
      .split('\n')
      .map((line) => /^export ([A-Z_]+)=['"]?(.*?)['"]?$/.exec(line.trim()))
      .filter((match): match is RegExpExecArray => match !== null)
      .map((match) => [match[1], match[2]]),
  );
  options = { ...cloudFromEnvironment({ ...env, OS_CLOUD: '' }), computeVersion: '2.74' };
  client = new OpenStackClient(options);
});

test('password and application-credential logins get a token and the catalog', async (t) => {
  const token = await client.authenticate();
  t.true(token.expiresAt > Date.now());
  t.regex(await client.endpoint('compute'), /^http:\/\/.+\/v2\.1/);
  t.regex(await client.endpoint('image'), /^http:\/\//);
  t.regex(await client.endpoint('network'), /^http:\/\//);
  const withSecret = new OpenStackClient({ authUrl: options.authUrl, credentials: { kind: 'application', id: env.PADDOCK_TEST_APP_CRED_ID, secret: env.PADDOCK_TEST_APP_CRED_SECRET } });
  t.true((await withSecret.flavors()).length > 0);
});

test('a wrong password is an unauthorized error that does not show it; a dead Keystone is unreachable', async (t) => {
  const password = `wrong-${randomBytes(6).toString('hex')}`;
  const bad = new OpenStackClient({ ...options, credentials: { ...(options.credentials as Extract<CloudOptions['credentials'], { kind: 'password' }>), password } });
  const error = await t.throwsAsync(bad.flavors(), { instanceOf: OpenStackError });
  t.is(error?.kind, 'unauthorized');
  t.false(error?.message.includes(password));
  const dead = new OpenStackClient({ ...options, authUrl: 'http://127.0.0.1:9/v3' });
  const down = await t.throwsAsync(dead.flavors(), { instanceOf: OpenStackError });
  t.is(down?.kind, 'unreachable');
  t.regex(down?.message ?? '', /Keystone is unreachable/);
});

test('Glance: an image is created, uploaded, found again by its sha256, and listed across pages', async (t) => {
  const bytes = randomBytes(256 * 1024);
  const sha512 = createHash('sha512').update(bytes).digest('hex');
  const image = await client.createImage({ name: `paddock-test-${randomBytes(3).toString('hex')}`, disk_format: 'raw', container_format: 'bare', visibility: 'private' });
  t.teardown(() => client.call('image', 'DELETE', `/v2/images/${image.id}`).catch(() => undefined));
  await client.uploadImage(image.id, Readable.from(bytes));
  const stored = await client.image(image.id);
  t.is(stored?.status, 'active');
  t.is(stored?.size, bytes.length);
  t.is(stored?.os_hash_value, sha512, 'Glance hashed what was sent');
  const all = await client.images({ limit: '1' });
  t.true(all.length >= 2, 'more than one page was followed');
  t.true(all.some((each) => each.id === image.id));
});

test('Nova: flavors, keypairs, a tagged server to ACTIVE with an address, listed by tag, deleted', async (t) => {
  const flavors = await client.flavors();
  const tiny = flavors.find((flavor) => flavor.name === 'm1.tiny');
  t.truthy(tiny);
  t.is(tiny?.vcpus, 1);
  const keyName = `paddock-test-${randomBytes(3).toString('hex')}`;
  await client.createKeypair(keyName, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb9ECWwBTBGl7dYLK6LzPGAbdUG4chd0q0lqQLRDsah paddock-test');
  t.true((await client.keypairs()).includes(keyName));
  const images = await client.images();
  const tag = `paddock-test-${randomBytes(3).toString('hex')}`;
  const created = await client.createServer({
    name: tag,
    flavorRef: tiny!.id,
    imageRef: images.find((image) => image.name === 'cirros-fake')!.id,
    key_name: keyName,
    networks: [{ uuid: env.PADDOCK_TEST_NETWORK_ID }],
    tags: [tag],
    metadata: { 'paddock-reservation': 'r-000000000000' },
  });
  let server = created;
  await waitFor(async () => {
    server = (await client.server(created.id))!;
    return server.status === 'ACTIVE' || server.status === 'ERROR';
  }, 60_000);
  t.is(server.status, 'ACTIVE', server.fault?.message);
  t.true(Object.values(server.addresses).flat().length > 0, 'an address is known');
  t.deepEqual((await client.servers({ tags: tag })).map((each) => each.id), [created.id]);
  await client.deleteServer(created.id);
  await waitFor(async () => (await client.server(created.id)) === undefined, 60_000);
  await client.deleteKeypair(keyName);
  t.false((await client.keypairs()).includes(keyName));
  await t.notThrowsAsync(client.deleteServer(created.id), 'deleting twice is fine');
});
