// A lab of static hosts on real sshd servers, served by the API's embedded agent, for tests that
// follow machines through provisionings: m1 (slot=a) and m2 (slot=b), each on a server of its own,
// and a user who reserves them over HTTP. A provisioning fails for real when the test makes the
// host's key file one the tenant could rewrite (`breakKeyFile`): the agent refuses to add a key
// there, an infrastructure failure at sshReady, until `mendKeyFile`.
import { chmodSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, staticHostOn, staticMachinesYaml, testConfig, type JsonClient, type TestApi } from './api.js';
import { startSshd, type TestSshd } from './sshd.js';
import { waitFor } from './wait.js';

export interface StaticLab {
  hosts: { m1: TestSshd; m2: TestSshd };
  /** The machines' YAML (no other keys): `machines:` and m1, m2. */
  machines: string;
  /** The same with only the machines named. */
  only(...names: ('m1' | 'm2')[]): string;
  /** The key file of m1's tenant can be rewritten by her: the next provisionings of m1 fail. */
  breakKeyFile(): void;
  mendKeyFile(): void;
}

export async function staticLab(t: ExecutionContext): Promise<StaticLab> {
  const [m1, m2] = await Promise.all([startSshd(), startSshd()]);
  t.teardown(() => Promise.all([m1.stop(), m2.stop()]));
  const entries = {
    m1: { ...staticHostOn(m1, 'm1', { type: 'box', slot: 'a' }), capacities: {} },
    m2: { ...staticHostOn(m2, 'm2', { type: 'box', slot: 'b' }), capacities: {} },
  };
  const only = (...names: ('m1' | 'm2')[]) => staticMachinesYaml(names.map((name) => entries[name]));
  return {
    hosts: { m1, m2 },
    machines: only('m1', 'm2'),
    only,
    breakKeyFile: () => chmodSync(m1.authorizedKeysFile, 0o666),
    mendKeyFile: () => chmodSync(m1.authorizedKeysFile, 0o644),
  };
}

export interface LabApi {
  api: TestApi;
  admin: JsonClient;
  user: JsonClient;
}

/** A real API (and its agent) on the lab's configuration, with a user `erin`. */
export async function labApi(yaml: string, dataDir?: string): Promise<LabApi> {
  const config = testConfig(yaml, dataDir);
  const api = await startApi(config);
  const admin = api.http();
  const token = ((await admin.post('v1/tokens', { json: { name: 'erin', role: 'user' } })).body as { token: string }).token;
  return { api, admin, user: api.http(token) };
}

const ended = new Set(['released', 'failed', 'expired', 'cancelled']);

/** The user reserves one machine by spec and waits until it is ready or has ended (a failed one released). */
export async function provision({ user }: LabApi, spec: string, image?: string): Promise<ReservationView> {
  const created = await user.post('v1/reservations', { json: { members: [{ role: 'main', spec, ...(image ? { image } : {}) }] } });
  if (created.statusCode !== 201) throw new Error(`reserving ${spec}: ${JSON.stringify(created.body)}`);
  const id = (created.body as ReservationView).id;
  for (;;) {
    const answer = (await user.get(`v1/reservations/${id}`, { searchParams: { wait: 'ready', timeout: 60 } })).body as ReservationView;
    if (answer.state === 'ready' || ended.has(answer.state)) return answer;
  }
}

/** The user releases it and waits until its machines are given back. */
export async function release({ user }: LabApi, id: string): Promise<void> {
  await user.delete(`v1/reservations/${id}`);
  await waitFor(async () => ended.has(((await user.get(`v1/reservations/${id}`)).body as ReservationView).state), 60_000, `${id} released`);
}
