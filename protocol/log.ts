// The long-running processes (`paddock serve`, `paddock agent`, `paddock runner`) log through pino:
// one JSON object a line on stderr with `level`, `time`, `component` (api, scheduler, agent, runner,
// provisioner, jobs, …), a message, and the ids in play as fields (`request`, `reservation`,
// `machine`, `allocation`, `run`), so a log pipeline filters on them rather than parsing the
// message. `text` is the same lines for a person at a terminal (pino-pretty, one a line).
//
// Every line logged while the API serves a request carries its `request` id, whichever part logs
// it: the id lives in an AsyncLocalStorage the API's request middleware fills (api/request-log.ts).
// Secrets never belong in a line; the redact paths below are a second guard for the obvious fields.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { pino, stdTimeFunctions, type DestinationStream, type LogFn, type Logger } from 'pino';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';

export type LogFormat = 'json' | 'text';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Fields on a line: ids and figures. A key named after a credential is censored (redactPaths). */
export type LogFields = Record<string, unknown>;

/** What the parts log through; pino's logger is one. `child` adds fields to every line of the child. */
export interface Log {
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  child(bindings: LogFields): Log;
}

export interface LogOptions {
  /** Default: text when stderr is a terminal, else json. */
  format?: LogFormat;
  /** Default: info. */
  level?: LogLevel;
  /** The process's part that logs, e.g. `api` or `agent`; children name their own. */
  component: string;
  /** Where lines go (default: stderr, written synchronously so no line is lost at exit). */
  destination?: DestinationStream;
}

/** Credential fields, at the top of a line and one level down; their values become `[redacted]`. */
const secretKeys = ['token', 'password', 'privateKey', 'authorization', 'secret', 'cookie'];
const redactPaths = [...secretKeys, ...secretKeys.map((key) => `*.${key}`), 'headers.authorization', 'req.headers.authorization'];

/** The fields of the work being done now (the API request being served), added to every line. */
const context = new AsyncLocalStorage<LogFields>();

/** Runs `work` with `fields` (e.g. `{request}`) on every line logged while it runs, also in what it awaits. */
export function withLogFields<T>(fields: LogFields, work: () => T): T {
  return context.run({ ...context.getStore(), ...fields }, work);
}

export function defaultLogFormat(): LogFormat {
  return process.stderr.isTTY ? 'text' : 'json';
}

export function createLog(options: LogOptions): Log {
  const format = options.format ?? defaultLogFormat();
  const destination =
    format === 'text'
      ? (createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty)({
          destination: options.destination ?? 2,
          sync: true,
          colorize: options.destination === undefined && process.stderr.isTTY,
          singleLine: true,
          translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
          ignore: 'pid,hostname,component',
          messageFormat: '{component}: {msg}',
        })
      : (options.destination ?? pino.destination({ fd: 2, sync: true }));
  const root = pino(
    {
      level: options.level ?? 'info',
      base: undefined,
      timestamp: stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: redactPaths, censor: '[redacted]' },
      mixin: () => ({ ...context.getStore() }),
    },
    destination,
  );
  return withFields(root, { component: options.component });
}

/**
 * A logger with `fields` on its lines. Its children are made from the root with the fields merged,
 * so a child that names its own `component` replaces its parent's instead of repeating the key.
 */
function withFields(root: Logger, fields: LogFields): Log {
  const logger = Object.create(root.child(fields)) as Log;
  logger.child = (more) => withFields(root, { ...fields, ...more });
  return logger;
}

/** A log that drops every line (tests and library use without a process around it). */
export function silentLog(): Log {
  return pino({ level: 'silent' });
}

/** A request id from a caller (a proxy's) is kept only if it is short and plain; anything else is replaced. */
const requestIdPattern = /^[A-Za-z0-9][A-Za-z0-9._:+=-]{0,99}$/;

/** The id of a request: the caller's X-Request-Id if well formed, else a fresh one. */
export function requestId(given: string | undefined): string {
  return given !== undefined && requestIdPattern.test(given) ? given : randomUUID();
}
