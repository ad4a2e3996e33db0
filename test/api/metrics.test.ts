// Prometheus metrics as a lab admin's Prometheus reads them: a real server on static hosts with
// `metrics.listen`, scraped over HTTP before and after a user's reservations live (one ready and
// released, one queued and cancelled, one failing on a machine that cannot be prepared) and images
// are uploaded (one stored, one refused). The counters and histograms move with the right labels,
// the gauges say what the scheduler holds, routes are patterns, and nothing in the scrape names a
// reservation, an owner or a secret. The Grafana dashboard's queries use only metrics it exports.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import got from 'got';
import { Paddock, ReservationFailedError } from '../../client/index.js';
import type { ReservationView } from '../../protocol/api.js';
import { startApi, staticMachinesYaml, testConfig, type TestApi } from '../helpers/api.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { exported, samples, scrape as scrapeAt, value } from '../helpers/metrics.js';
import { waitFor } from '../helpers/wait.js';

let api: TestApi;
let host: TestSshd;
let metricsUrl: string;

test.before(async () => {
  host = await startSshd();
  const machines = staticMachinesYaml([
    { name: 'good-1', port: host.port, adminKeyPath: host.adminKey.path, authorizedKeysFile: host.authorizedKeysFile },
    {
      name: 'broken-1',
      port: host.port,
      adminKeyPath: '/nonexistent/admin_ed25519',
      authorizedKeysFile: `${host.authorizedKeysFile}.broken`,
      user: 'paddock-broken',
      labels: { type: 'broken-host', arch: 'x86_64' },
    },
  ]);
  api = await startApi(testConfig(`metrics: { listen: '127.0.0.1:0' }\nhealth: { quarantineAfter: 1, retries: 0 }\n${machines}`));
  metricsUrl = api.server.metrics!.url;
});

test.after.always(async () => {
  await api?.close();
  await host?.stop();
});

const scrape = () => scrapeAt(metricsUrl);

async function ended(user: Paddock, id: string): Promise<ReservationView> {
  let view = (await user.reservation(id)).view;
  await waitFor(async () => ['released', 'failed', 'cancelled', 'expired'].includes((view = (await user.reservation(id)).view).state), 60_000, `${id} ended`);
  return view;
}

test.serial("a reservation's life, a failure and uploads move the counters, with bounded labels and nothing of the users in them", async (t) => {
  const admin = new Paddock({ url: api.url, token: api.adminToken });
  const { token } = await admin.createToken('alice-observed');
  const user = new Paddock({ url: api.url, token });
  const before = await scrape();
  t.is(value(before, 'paddock_machines', { state: 'available', kind: 'static', pool: '', lab_host: 'local' }), 2, 'machines by state, kind, pool and lab host');
  t.is(value(before, 'paddock_machine_health_score', { machine: 'good-1' }), 1, 'a health score per machine, 1 with no provisioning');
  t.is(value(before, 'paddock_machine_health_score', { machine: 'broken-1' }), 1);
  t.is(value(before, 'paddock_queue_depth'), 0);
  t.is(value(before, 'paddock_api_leader'), 1, 'one server leads');

  // Ready and released; meanwhile a second request queues, is seen in the queue, and is cancelled.
  const reservation = await user.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: '10m' }, { renew: false });
  await reservation.ready({ timeout: 120 });
  const queued = await user.reserve({ members: [{ role: 'main', spec: 'static-host' }], lease: '10m' }, { renew: false });
  t.is(queued.state, 'queued');
  const holding = await scrape();
  t.is(value(holding, 'paddock_queue_depth'), 1);
  t.is(value(holding, 'paddock_reservations', { state: 'ready' }), 1);
  t.is(value(holding, 'paddock_reservations', { state: 'queued' }), 1);
  t.is(value(holding, 'paddock_machines', { state: 'reserved', kind: 'static', pool: '', lab_host: 'local' }), 1);
  await queued.release();
  await reservation.release();
  await ended(user, reservation.id);

  // A machine that cannot be prepared: the reservation fails with a code, the machine is quarantined.
  const failing = await user.reserve({ members: [{ role: 'main', spec: 'broken-host' }], lease: '10m' }, { renew: false });
  const error = await t.throwsAsync(failing.ready({ timeout: 120 }), { instanceOf: ReservationFailedError });
  const failed = await ended(user, failing.id);
  const code = failed.allocations[0].failure?.code;
  t.truthy(code, `the failure has a code (${error?.message})`);

  // Images: one stored, one refused for its format.
  const bytes = Buffer.from('a small raw image for the metrics test\n');
  const stored = await api.http(token).put('v1/images/observed/v1', {
    body: bytes.toString(),
    searchParams: { format: 'raw' },
    headers: { 'paddock-sha256': createHash('sha256').update(bytes).digest('hex') },
  });
  t.is(stored.statusCode, 201, JSON.stringify(stored.body));
  const refused = await api.http(token).put('v1/images/observed/v2', { body: 'x', searchParams: { format: 'tarball-of-secrets' } });
  t.is(refused.statusCode, 400);

  const after = await scrape();
  t.is(value(after, 'paddock_reservations_ended_total', { outcome: 'released', code: 'none' }), 1);
  t.is(value(after, 'paddock_reservations_ended_total', { outcome: 'cancelled', code: 'none' }), 1);
  t.is(value(after, 'paddock_reservations_ended_total', { outcome: 'failed', code: code! }), 1, 'the failure by its code');
  t.is(value(after, 'paddock_queue_wait_seconds_count', { outcome: 'granted' }), 2, 'the two grants');
  t.is(value(after, 'paddock_queue_wait_seconds_count', { outcome: 'cancelled' }), 1, 'the request cancelled while queued');
  t.is(value(after, 'paddock_queue_depth'), 0);
  const provisioned = { kind: 'static', outcome: 'ready', code: 'none', purpose: 'reservation' };
  t.is(value(after, 'paddock_provisionings_total', provisioned), 1);
  t.is(value(after, 'paddock_provisionings_total', { ...provisioned, outcome: 'failed', code: code! }), 1);
  t.is(value(after, 'paddock_provisioning_duration_seconds_count', { kind: 'static', outcome: 'ready', purpose: 'reservation' }), 1);
  t.true(value(after, 'paddock_provisioning_duration_seconds_sum', { kind: 'static', outcome: 'ready', purpose: 'reservation' }) > 0, 'time to ready');
  t.is(value(after, 'paddock_provisioning_stage_duration_seconds_count', { kind: 'static', stage: 'sshReady' }), 1, 'the stage a static host goes through');
  t.is(value(after, 'paddock_provisioning_stage_duration_seconds_count', { kind: 'static', stage: 'powerConfirmed' }), 0, 'a static host has no power stage');
  t.is(value(after, 'paddock_machine_health_score', { machine: 'broken-1' }), 0, 'its one provisioning failed');
  t.is(value(after, 'paddock_machine_health_samples', { machine: 'broken-1' }), 1);
  t.is(value(after, 'paddock_machine_health_score', { machine: 'good-1' }), 1);
  t.is(value(after, 'paddock_machines', { state: 'quarantined', kind: 'static', pool: '', lab_host: 'local' }), 1);
  t.is(value(after, 'paddock_machines', { state: 'available', kind: 'static', pool: '', lab_host: 'local' }), 1);
  t.is(value(after, 'paddock_image_uploads_total', { format: 'raw', outcome: 'stored', code: 'none' }), 1);
  t.is(value(after, 'paddock_image_uploads_total', { format: 'other', outcome: 'refused', code: 'invalid_request' }), 1, 'an unknown format is not a label');
  t.is(value(after, 'paddock_image_upload_bytes_total', { format: 'raw' }), bytes.length);
  t.is(value(after, 'paddock_image_upload_throughput_bytes_per_second_count', { format: 'raw' }), 1);
  t.true(
    value(after, 'paddock_store_commit_duration_seconds_count', { outcome: 'committed' }) >
      value(before, 'paddock_store_commit_duration_seconds_count', { outcome: 'committed' }),
  );
  // The embedded agent's metrics are in the same scrape.
  t.true(value(after, 'paddock_agent_reports_total', { report: 'ready', code: 'none' }) >= 1);
  t.is(value(after, 'paddock_agent_reports_total', { report: 'failed', code: code! }), 1);
  t.true(exported(after).has('paddock_pdu_operations_total'), "the agent's PDU counter is there before any board is powered");

  // Requests by route pattern and status, never by the path asked.
  const routes = new Set(samples(after).flatMap((sample) => (sample.name === 'paddock_http_request_duration_seconds_count' ? [sample.labels.route] : [])));
  t.true(routes.has('/v1/reservations/:id'), [...routes].join(' '));
  t.true(routes.has('/v1/images/:name/:tag'));
  t.true(value(after, 'paddock_http_request_duration_seconds_count', { method: 'POST', route: '/v1/reservations', status: '201' }) >= 3);
  t.true(value(after, 'paddock_http_request_duration_seconds_count', { method: 'PUT', route: '/v1/images/:name/:tag', status: '400' }) >= 1);
  const strange = await api.http(token).get(`v1/no-such-thing/${reservation.id}`);
  t.is(strange.statusCode, 404);
  const last = await scrape();
  t.true(value(last, 'paddock_http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status: '404' }) >= 1);

  // Nothing of the users: no reservation id, owner, token, key or image name.
  for (const secret of [
    reservation.id,
    queued.id,
    failing.id,
    'alice-observed',
    token,
    api.adminToken,
    'observed',
    'tarball',
    'BEGIN OPENSSH',
    'no-such-thing',
  ])
    t.false(last.includes(secret), `the scrape does not hold ${secret.slice(0, 12)}`);
});

test.serial('the metrics listener answers GET /metrics only, without a token, and the API port does not serve them', async (t) => {
  const base = metricsUrl.replace(/\/metrics$/, '');
  t.is((await got(`${base}/`, { throwHttpErrors: false })).statusCode, 404);
  t.is((await got.post(metricsUrl, { throwHttpErrors: false, body: 'x' })).statusCode, 405);
  const head = await got.head(metricsUrl, { throwHttpErrors: false });
  t.is(head.statusCode, 200);
  t.regex(String(head.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  t.is((await api.http().get('metrics')).statusCode, 404);
  t.true(exported(await scrape()).has('process_cpu_seconds_total'), "the process's own metrics");
});

test.serial('the Grafana dashboard is valid dashboard JSON, and every metric its queries use is one /metrics exports', async (t) => {
  const file = path.resolve(import.meta.dirname, '../../deploy/grafana/paddock.json');
  const dashboard = JSON.parse(readFileSync(file, 'utf8')) as {
    title: string;
    uid: string;
    schemaVersion: number;
    templating: { list: { name: string; type: string; query: string }[] };
    panels: { title: string; type: string; datasource?: { uid: string }; targets?: { expr: string }[]; gridPos: object }[];
  };
  t.truthy(dashboard.title);
  t.truthy(dashboard.uid);
  t.true(dashboard.schemaVersion >= 30);
  const datasource = dashboard.templating.list.find((variable) => variable.type === 'datasource');
  t.is(datasource?.query, 'prometheus', 'a Prometheus datasource variable');
  const names = exported(await scrape());
  const queries = dashboard.panels.flatMap((panel) => panel.targets ?? []).map((target) => target.expr);
  t.true(queries.length >= 6);
  for (const panel of dashboard.panels) {
    t.truthy(panel.gridPos, `${panel.title} has a place`);
    if (panel.type !== 'row') t.is(panel.datasource?.uid, `\${${datasource!.name}}`, `${panel.title} reads the chosen datasource`);
  }
  const used = new Set(
    queries.flatMap((query) => [...query.matchAll(/\b(paddock_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+)\b/g)].map((match) => match[1])),
  );
  t.true(used.size >= 8, [...used].join(' '));
  for (const name of used) t.true(names.has(name), `${name} is exported`);
  const titles = dashboard.panels.map((panel) => panel.title.toLowerCase()).join('\n');
  for (const panel of ['queue depth', 'time to ready', 'failures by code', 'machines by state', 'health score']) t.true(titles.includes(panel), panel);
});
