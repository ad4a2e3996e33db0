// The building blocks of every request schema: each string a request carries is built by `text`
// (what people type: no control characters, well-formed Unicode, a length bound) or by
// `machineText` (what machines print: anything, stored as it is, a length bound); numbers and
// durations have bounds. Every path and query parameter of every route has a schema here too,
// which `define` applies before the handler. A test walks every route's schemas and fails on a
// string that was not built here, so a new field cannot forget the check.
import { z } from 'zod';
import { parseDuration } from './scheduler/units.js';

/** C0 controls (tab and newline included), DEL and C1 controls. */
// eslint-disable-next-line no-control-regex -- matching them is the point
const controlCharacter = /[\u0000-\u001f\u007f-\u009f]/;
/** The same, less tab and newline: for the few fields that hold lines of text. */
// eslint-disable-next-line no-control-regex -- matching them is the point
const controlCharacterInLines = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** The JSON-schema key that marks a string built here: `user` or `machine`. */
export const textMarker = 'x-paddock-text';

export interface TextOptions {
  max: number;
  min?: number;
  pattern?: RegExp;
  /** Said when the pattern does not match. */
  message?: string;
  /** Tab and newline allowed (job parameter values). */
  lines?: boolean;
}

/** A string from a person: refused (400 invalid_request) with a control character or a lone surrogate. */
export function text(options: TextOptions) {
  const refused = options.lines ? controlCharacterInLines : controlCharacter;
  let schema = z
    .string()
    .min(options.min ?? 0)
    .max(options.max);
  if (options.pattern) schema = schema.regex(options.pattern, options.message);
  return schema
    .refine((value) => !refused.test(value), `control characters are not allowed${options.lines ? ' (tab and newline are)' : ''}`)
    .refine((value) => !loneSurrogate.test(value), 'not well-formed Unicode (a lone surrogate)')
    .meta({ [textMarker]: 'user' });
}

/** A string a machine printed (stderr, a console): any character, stored as it is, bounded. */
export function machineText(max: number) {
  return z
    .string()
    .max(max)
    .meta({ [textMarker]: 'machine' });
}

/** Names of things (machines, tokens, jobs, runner hosts, agents): letters, digits, . _ - (and @ where said). */
export const name = (what: string, options: { at?: boolean } = {}) =>
  text({
    max: 63,
    pattern: options.at ? /^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/ : /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
    message: `${what} names use letters, digits, . _ -${options.at ? ' @' : ''} (up to 63)`,
  });

/**
 * A duration as seconds or text (`90`, `90s`, `10m`, `2h`, `1d`), more than 0 and at most `max`
 * seconds; rounded up to whole seconds.
 */
export function duration(what: string, max: number) {
  return z.union([z.number(), text({ max: 40 })]).transform((value, ctx) => {
    const seconds = parseDuration(value);
    if (seconds === null || seconds <= 0 || seconds > max) {
      ctx.addIssue({ code: 'custom', message: `not a ${what}: ${JSON.stringify(value)} (a duration from 1s to ${describeSeconds(max)}, e.g. 30s, 10m, 2h)` });
      return z.NEVER;
    }
    return Math.ceil(seconds);
  });
}

export function describeSeconds(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  return `${seconds}s`;
}

/** An integer within bounds. */
export const integer = (min: number, max: number) => z.number().int().min(min).max(max);

/** The bounds the README lists (section "Limits of a request"). */
export const bounds = {
  leaseSeconds: 30 * 86400,
  queueTimeoutSeconds: 30 * 86400,
  imageExpirySeconds: 365 * 86400,
  tokenExpirySeconds: 5 * 365 * 86400,
  jobTimeLimitSeconds: 24 * 3600,
  waitSeconds: 300,
};

const id = text({ max: 128, pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, message: 'an id uses letters, digits, . _ - (up to 128)' });
const imageWord = text({ max: 100, pattern: /^[a-z0-9][a-z0-9._-]{0,99}$/, message: 'use a-z, 0-9, . _ - (up to 100)' });
const flag = z.enum(['0', '1', 'true', 'false']);
const word = text({ max: 40, pattern: /^[A-Za-z0-9_.-]+$/, message: 'a word: letters, digits, _ . -' });

/**
 * The schema of every path parameter, by its name in the route's path. `define` refuses a route
 * with a parameter missing here, and a request whose value does not match (400 invalid_parameter).
 */
export const pathParameters: Record<string, z.ZodType> = {
  id,
  job: id,
  machine: id,
  name: text({ max: 128, pattern: /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/, message: 'a name uses letters, digits, . _ @ - (up to 128)' }),
  tag: imageWord,
};

/** The schema of every query parameter, by name; a route declares which ones it takes. */
export const queryParameters: Record<string, z.ZodType> = {
  all: flag,
  ended: flag,
  retired: flag,
  follow: flag,
  offset: text({ max: 15, pattern: /^\d+$/, message: 'a number of bytes (a whole number)' }),
  wait: word,
  timeout: text({ max: 12, pattern: /^\d+(\.\d+)?$/, message: 'a number of seconds' }),
  state: word,
  machine: id,
  // The console stream's (checked again where the WebSocket upgrade is taken).
  mode: word,
  takeover: flag,
  // A tunnel's (checked again where the WebSocket upgrade is taken).
  port: word,
  job: id,
  kinds: text({ max: 1000, pattern: /^([A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*)?$/, message: 'kinds separated by commas' }),
  format: word,
  arch: word,
  access: word,
  origin: word,
  expires: text({ max: 40 }),
  runner: name('runner'),
  agent: name('agent', { at: true }),
  // Their meaning is checked by api/pages.ts (400 invalid_request); here only what any text must be.
  limit: text({ max: 40 }),
  cursor: text({ max: 4000 }),
};
