// The client rebuilds typed errors from the API's stable codes and keeps their details.
import test from 'ava';
import {
  errorFromBody,
  ForbiddenError,
  IllegalTransitionError,
  InvalidRequestError,
  InvalidSpecError,
  LeaseExpiredError,
  NoMatchError,
  NotFoundError,
  PaddockError,
  UnauthorizedError,
} from '../../client/errors.js';

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
];

for (const [code, status, ErrorClass] of cases) {
  test(`${code} becomes ${ErrorClass.name}`, (t) => {
    const error = errorFromBody(status, { code, message: `about ${code}` });
    t.true(error instanceof ErrorClass);
    t.true(error instanceof PaddockError);
    t.is(error.code, code);
    t.is(error.status, status);
    t.is(error.message, `about ${code}`);
    t.is(error.name, ErrorClass.name);
  });
}

test('details survive: spec positions and per-member reasons', (t) => {
  const spec = errorFromBody(400, { code: 'invalid_spec', message: 'bad', details: { position: 7 } });
  t.is((spec as InvalidSpecError).position, 7);
  const noMatch = errorFromBody(422, { code: 'unsatisfiable', message: 'no', details: { members: [{ role: 'board', reason: 'arch' }] } });
  t.deepEqual((noMatch as NoMatchError).reasons, [{ role: 'board', reason: 'arch' }]);
});

test('unknown codes and bodies without a code still give a PaddockError', (t) => {
  const unknown = errorFromBody(418, { code: 'teapot', message: 'short and stout' });
  t.is(unknown.constructor, PaddockError);
  t.is(unknown.code, 'teapot');
  const empty = errorFromBody(502, '<html>bad gateway</html>');
  t.is(empty.code, 'http_error');
  t.regex(empty.message, /502/);
});
