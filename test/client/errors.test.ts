// The client rebuilds typed errors from the API's stable codes, keeps their details, and never
// lets a token into a message: not from an error body, not from a failed connection.
import net from 'node:net';
import { inspect } from 'node:util';
import test from 'ava';
import type { ReservationView } from '../../protocol/api.js';
import {
  errorFromBody,
  ForbiddenError,
  IllegalTransitionError,
  InvalidRequestError,
  InvalidSpecError,
  LeaseExpiredError,
  NoMatchError,
  NotFoundError,
  PaddockConnectionError,
  PaddockError,
  QuotaExceededError,
  redact,
  ReservationFailedError,
  UnauthorizedError,
} from '../../client/errors.js';
import { Http } from '../../client/http.js';
import { Paddock } from '../../client/index.js';

const cases: [string, number, typeof PaddockError][] = [
  ['unauthorized', 401, UnauthorizedError],
  ['forbidden', 403, ForbiddenError],
  ['not_found', 404, NotFoundError],
  ['invalid_json', 400, InvalidRequestError],
  ['invalid_request', 400, InvalidRequestError],
  ['payload_too_large', 413, InvalidRequestError],
  ['invalid_spec', 400, InvalidSpecError],
  ['unsatisfiable', 422, NoMatchError],
  ['illegal_transition', 409, IllegalTransitionError],
  ['lease_expired', 409, LeaseExpiredError],
  ['quota_exceeded', 429, QuotaExceededError],
  ['internal', 500, PaddockError],
];

for (const [code, status, ErrorClass] of cases) {
  test(`${code} becomes ${ErrorClass.name}`, (t) => {
    const details = { about: code };
    const error = errorFromBody(status, { code, message: `about ${code}`, details });
    t.is(error.constructor, ErrorClass);
    t.true(error instanceof PaddockError);
    t.true(error instanceof Error);
    t.is(error.code, code);
    t.is(error.status, status);
    t.is(error.message, `about ${code}`);
    t.is(error.name, ErrorClass.name);
    t.deepEqual(error.details, details);
  });
}

test('details survive: the quota and its limit', (t) => {
  const error = errorFromBody(429, { code: 'quota_exceeded', message: 'over', details: { quota: 'queued', limit: 2, current: 2, requested: 1 } });
  t.true(error instanceof QuotaExceededError);
  t.is((error as QuotaExceededError).quota, 'queued');
  t.is((error as QuotaExceededError).limit, 2);
});

test('details survive: spec positions and per-member reasons', (t) => {
  const spec = errorFromBody(400, { code: 'invalid_spec', message: 'bad', details: { spec: 'ram>=', position: 5, role: 'main' } });
  t.true(spec instanceof InvalidSpecError);
  t.is((spec as InvalidSpecError).position, 5);
  t.is((spec as InvalidSpecError).spec, 'ram>=');
  t.is((spec as InvalidSpecError).role, 'main');
  const noMatch = errorFromBody(422, { code: 'unsatisfiable', message: 'no', details: { members: [{ role: 'board', reason: 'arch' }] } });
  t.deepEqual((noMatch as NoMatchError).reasons, [{ role: 'board', reason: 'arch' }]);
  t.deepEqual((errorFromBody(422, { code: 'unsatisfiable', message: 'no' }) as NoMatchError).reasons, [], 'no details: no reasons, no crash');
});

test('bodies still as text or bytes are parsed', (t) => {
  const fromText = errorFromBody(404, JSON.stringify({ code: 'not_found', message: 'no reservation r-1' }));
  t.true(fromText instanceof NotFoundError);
  const fromBytes = errorFromBody(409, Buffer.from(JSON.stringify({ code: 'lease_expired', message: 'ended' })));
  t.true(fromBytes instanceof LeaseExpiredError);
});

test('unknown codes and bodies without a code still give a PaddockError', (t) => {
  const unknown = errorFromBody(418, { code: 'teapot', message: 'short and stout' });
  t.is(unknown.constructor, PaddockError);
  t.is(unknown.code, 'teapot');
  for (const body of ['<html>bad gateway</html>', undefined, null, 42, { message: 'no code' }, { code: '' }]) {
    const error = errorFromBody(502, body);
    t.is(error.code, 'http_error');
    t.is(error.status, 502);
    t.regex(error.message, /502/);
  }
  t.is(errorFromBody(400, { code: 'invalid_request' }).message, 'invalid_request', 'no message: the code stands in');
});

test("tokens never reach a message: the client's own, or anything shaped like one", (t) => {
  const token = 'pdk_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA';
  const error = errorFromBody(401, { code: 'unauthorized', message: `token ${token} is not known; also s3cret-value` }, { secrets: ['s3cret-value'] });
  t.false(error.message.includes(token));
  t.false(error.message.includes('s3cret-value'));
  t.regex(error.message, /token pdk_\[redacted\] is not known; also \[redacted\]/);
  t.is(redact('nothing secret here'), 'nothing secret here');
});

test('ReservationFailedError carries the state and the reason', (t) => {
  const view = { id: 'r-1', state: 'failed', reason: 'boot timed out on host-2' } as ReservationView;
  t.is(new ReservationFailedError(view).failureCode, undefined, 'a view without allocations has no failure code');
  view.allocations = [
    {
      id: 'r-1.0',
      role: 'vm',
      index: 0,
      machine: 'host-2',
      state: 'failed',
      stages: {},
      failure: { code: 'boot_timeout', fault: 'request', reason: 'boot timed out' },
    },
  ];
  const error = new ReservationFailedError(view);
  t.is(error.failureCode, 'boot_timeout');
  t.is((error.details as { code?: string }).code, 'boot_timeout');
  t.true(error instanceof PaddockError);
  t.is(error.code, 'reservation_failed');
  t.is(error.state, 'failed');
  t.is(error.reason, 'boot timed out on host-2');
  t.regex(error.message, /r-1 is failed: boot timed out on host-2/);
});

test('an unreachable server is a PaddockConnectionError that shows neither token nor URL password', async (t) => {
  // A port that was free a moment ago: connecting to it is refused, for real.
  const port = await new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
  const token = 'pdk_c2VjcmV0LXRva2VuLWZvci10ZXN0aW5n';
  const http = new Http({ url: `http://paddock:hunter2@127.0.0.1:${port}/`, token });
  const error = await t.throwsAsync(http.post('v1/reservations', { members: [] }), { instanceOf: PaddockConnectionError });
  t.is(error?.code, 'connection_failed');
  t.regex(error!.message, new RegExp(`cannot reach Paddock at http://127\\.0\\.0\\.1:${port}: ECONNREFUSED`));
  const everything = `${error!.message}\n${error!.stack}\n${inspect(error, { depth: 10, showHidden: true })}`;
  t.false(everything.includes(token));
  t.false(everything.includes('hunter2'));
});

test('a missing URL or token is a clear configuration error', (t) => {
  const saved = { url: process.env.PADDOCK_URL, token: process.env.PADDOCK_TOKEN };
  delete process.env.PADDOCK_URL;
  delete process.env.PADDOCK_TOKEN;
  try {
    t.throws(() => new Paddock({ token: 'pdk_x' }), { instanceOf: PaddockError, message: /PADDOCK_URL/ });
    t.throws(() => new Paddock({ url: 'http://127.0.0.1:7300' }), { instanceOf: PaddockError, message: /PADDOCK_TOKEN/ });
    t.throws(() => new Paddock({ url: 'not a url', token: 'pdk_x' }), { instanceOf: PaddockError, message: /not a URL/ });
  } finally {
    if (saved.url !== undefined) process.env.PADDOCK_URL = saved.url;
    if (saved.token !== undefined) process.env.PADDOCK_TOKEN = saved.token;
  }
});
