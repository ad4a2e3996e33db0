// An outlet of an APC switched rack PDU over SNMP v1/v2c (PowerNet-MIB outlet control, column
// 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4, indexed by outlet): SET 1 (immediateOn) or 2 (immediateOff);
// GET returns 1 while the outlet is on and 2 while it is off.
// The community string is a password: it appears in no message (the library's own error texts can
// quote it, so they are redacted and not kept as the cause).
import { createRequire } from 'node:module';
import { z } from 'zod';
import { hostResolves } from '../../protocol/reach.js';
import { PowerError, type PowerDriver, type PowerState } from './types.js';

export const APC_OUTLET_CONTROL_OID = '1.3.6.1.4.1.318.1.1.12.3.3.1.1.4';

export const snmpSettingsSchema = z.strictObject({
  driver: z.literal('snmp'),
  host: z.string().trim().min(1),
  port: z.number().int().min(1).max(65535).default(161),
  /** The write community (a secret). */
  community: z.string().min(1).default('private'),
  /** SNMP version; a bare 1 in YAML is taken as '1'. */
  version: z.preprocess((value) => (value === 1 ? '1' : value), z.enum(['1', '2c'])).default('2c'),
  outlet: z.number().int().min(1),
  /** Seconds to wait for each reply; a request is sent twice before giving up. */
  timeout: z.number().positive().max(60).default(5),
});

export type SnmpSettings = z.output<typeof snmpSettingsSchema>;

// The part of net-snmp (CommonJS, no type declarations) this driver uses.
interface Varbind {
  oid: string;
  type: number;
  value: unknown;
}
type Callback = (error: (Error & { status?: number }) | null, varbinds?: Varbind[]) => void;
interface Session {
  get(oids: string[], callback: Callback): void;
  set(varbinds: Varbind[], callback: Callback): void;
  close(): void;
  on(event: 'error', listener: (error: Error) => void): void;
}
interface NetSnmp {
  Version1: number;
  Version2c: number;
  ObjectType: { Integer: number };
  ErrorStatus: Record<string, number>;
  createSession(
    target: string,
    community: string,
    options: { port: number; version: number; timeout: number; retries: number; transport: 'udp4' | 'udp6' },
  ): Session;
  isVarbindError(varbind: Varbind): boolean;
  varbindError(varbind: Varbind): string;
}
let loaded: NetSnmp | undefined;
/** net-snmp, loaded when a driver first talks to a PDU: reading the settings does not load it. */
const netSnmp = () => (loaded ??= createRequire(import.meta.url)('net-snmp') as NetSnmp);

const RETRIES = 1;
const ON = 1;
const OFF = 2;

export function createSnmpDriver(settings: SnmpSettings): PowerDriver {
  const snmp = netSnmp();
  const oid = `${APC_OUTLET_CONTROL_OID}.${settings.outlet}`;
  const target = settings.host.includes(':') ? `[${settings.host}]:${settings.port}` : `${settings.host}:${settings.port}`;
  const describe = `${target} outlet ${settings.outlet}`;
  const redact = (text: string) => text.split(settings.community).join('<community>');

  function failure(what: string, error: Error & { status?: number }): PowerError {
    if (error.name === 'RequestTimedOutError') {
      return new PowerError(
        `${describe}: no SNMP reply to the ${what} within ${settings.timeout}s (sent ${RETRIES + 1} times); check the community, the SNMP version (${settings.version}) and that the PDU is reachable`,
      );
    }
    const refused = [snmp.ErrorStatus.NoAccess, snmp.ErrorStatus.NotWritable, snmp.ErrorStatus.AuthorizationError, snmp.ErrorStatus.NoSuchName];
    const hint =
      error.name === 'RequestFailedError' && error.status !== undefined && refused.includes(error.status) ? ` (no such outlet, or a read-only community)` : '';
    return new PowerError(`${describe}: the PDU refused the ${what}: ${redact(error.message)}${hint}`);
  }

  /** One request on a fresh session; the session is closed however it ends. */
  function request(what: string, send: (session: Session, callback: Callback) => void, signal?: AbortSignal): Promise<Varbind> {
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      let session: Session;
      try {
        session = snmp.createSession(settings.host, settings.community, {
          port: settings.port,
          version: settings.version === '1' ? snmp.Version1 : snmp.Version2c,
          timeout: settings.timeout * 1000,
          retries: RETRIES,
          transport: settings.host.includes(':') ? 'udp6' : 'udp4',
        });
      } catch (error) {
        return reject(new PowerError(`${describe}: cannot open an SNMP session: ${redact((error as Error).message)}`));
      }
      let settled = false;
      const settle = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        session.close();
        outcome();
      };
      const onAbort = () => settle(() => reject(signal?.reason));
      signal?.addEventListener('abort', onAbort, { once: true });
      session.on('error', (error) => settle(() => reject(new PowerError(`${describe}: SNMP socket error: ${redact(error.message)}`))));
      send(session, (error, varbinds) => {
        if (error) return settle(() => reject(failure(what, error)));
        const varbind = varbinds?.[0];
        if (!varbind) return settle(() => reject(new PowerError(`${describe}: the PDU sent an empty reply to the ${what}`)));
        if (snmp.isVarbindError(varbind)) {
          return settle(() => reject(new PowerError(`${describe}: the PDU refused the ${what}: ${snmp.varbindError(varbind)} (no such outlet?)`)));
        }
        settle(() => resolve(varbind));
      });
    });
  }

  const command = async (value: number, signal?: AbortSignal) => {
    const what = value === ON ? 'SET immediateOn' : 'SET immediateOff';
    await request(what, (session, callback) => session.set([{ oid, type: snmp.ObjectType.Integer, value }], callback), signal);
  };

  const readState = async (signal?: AbortSignal): Promise<PowerState> => {
    const varbind = await request('GET of the outlet state', (session, callback) => session.get([oid], callback), signal);
    if (varbind.value === ON) return 'on';
    if (varbind.value === OFF) return 'off';
    throw new PowerError(`${describe}: the PDU reports outlet state ${JSON.stringify(varbind.value)}, expected 1 (on) or 2 (off)`);
  };

  return {
    pdu: `snmp ${target}`,
    describe,
    on: (signal) => command(ON, signal),
    off: (signal) => command(OFF, signal),
    readState,
    /** The address resolves and the PDU answers a GET of the outlet's state (nothing is SET). */
    async check(signal): Promise<void> {
      await hostResolves(settings.host, signal).catch((error: unknown) => {
        throw new PowerError(`${describe}: the PDU's address ${settings.host} does not resolve (${(error as Error).message})`);
      });
      await readState(signal).catch((error: unknown) => {
        throw signal.aborted ? new PowerError(`${describe}: no SNMP reply within the check's time limit`) : error;
      });
    },
  };
}
