// A port on a PDU that pdudaemon drives, through its HTTP API:
// `GET /power/control/{on|off}?hostname=<pdu>&port=<n>`. The reply comes once the command has run
// (200 "OK - accepted request", 500 "Invalid request" for an unknown PDU or a missing port).
// pdudaemon cannot report a port's state, so this driver has no readState; and for `localcmdline`
// PDUs it ignores the command's exit status, so a 200 only means the command was run. got is loaded
// when a driver first talks to pdudaemon: reading the settings (the API process) does not load it.
import { z } from 'zod';
import { PowerError, type PowerDriver } from './types.js';

export const pdudaemonSettingsSchema = z.strictObject({
  driver: z.literal('pdudaemon'),
  /** Where pdudaemon's HTTP listener is. */
  url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).default('http://127.0.0.1:16421'),
  /** The PDU's hostname as pdudaemon's config names it (a key of its `pdus`). */
  pdu: z.string().trim().min(1),
  /** The port (outlet) number on that PDU. */
  port: z.number().int().min(0),
  /** Seconds to wait for the reply (pdudaemon replies when the command has finished). */
  timeout: z.number().positive().max(3600).default(60),
});

export type PdudaemonSettings = z.output<typeof pdudaemonSettingsSchema>;

export function createPdudaemonDriver(settings: PdudaemonSettings): PowerDriver {
  const base = new URL(settings.url.endsWith('/') ? settings.url : `${settings.url}/`);
  // For messages: no credentials, no query.
  const where = `${base.origin}${base.pathname === '/' ? '' : base.pathname}`;
  const describe = `${settings.pdu} port ${settings.port}`;

  const unreachable = (error: unknown) => {
    const code = (error as { code?: string }).code;
    const reason = code === 'ECONNREFUSED' ? 'connection refused; is pdudaemon running?' : (code ?? (error as Error).message);
    return new PowerError(`${describe}: the PDU daemon at ${where} is unreachable (${reason})`, { cause: error });
  };

  async function control(action: 'on' | 'off', signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const { default: got, RequestError } = await import('got');
    let response;
    try {
      response = await got(new URL(`power/control/${action}`, base), {
        searchParams: { hostname: settings.pdu, port: settings.port },
        throwHttpErrors: false,
        followRedirect: false,
        retry: { limit: 0 },
        timeout: { request: settings.timeout * 1000 },
        signal,
      });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const code = error instanceof RequestError ? error.code : undefined;
      if (code === 'ETIMEDOUT') {
        throw new PowerError(`${describe}: the PDU daemon at ${where} did not reply to "${action}" within ${settings.timeout}s (the command may still run)`, {
          cause: error,
        });
      }
      throw unreachable(error);
    }
    if (response.statusCode === 200) return;
    const body = response.body.trim().slice(0, 200);
    const hint = response.statusCode === 500 ? ' (is the PDU in its config, with that port?)' : '';
    throw new PowerError(`${describe}: the PDU daemon at ${where} refused "${action}": ${response.statusCode} ${body || '(empty reply)'}${hint}`);
  }

  return {
    pdu: settings.pdu,
    describe,
    on: (signal) => control('on', signal),
    off: (signal) => control('off', signal),
    // Any HTTP answer to its base URL (aiohttp's 404) shows the daemon listens; nothing is switched.
    async check(signal) {
      const { default: got } = await import('got');
      try {
        await got(base, { throwHttpErrors: false, followRedirect: false, retry: { limit: 0 }, signal });
      } catch (error) {
        if (signal.aborted) throw new PowerError(`${describe}: the PDU daemon at ${where} did not answer within the check's time limit`);
        throw unreachable(error);
      }
    },
  };
}
