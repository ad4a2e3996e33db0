// GET /v1/reservations/:id/console/stream: a machine's console as a WebSocket, for `paddock console
// -i`, the client library and the dashboard's terminal. The token goes in the Authorization header
// (a browser's as a subprotocol: websockets.ts `authorizationOf`), never in the URL. Everything is checked before the upgrade, and a refusal is an ordinary
// HTTP error answer: the caller must see the reservation (its owner, or an admin), `machine` must
// be one of its machines, and only the owner may ask to type (`mode=write`, `takeover=1`).
//
// Messages: binary frames are console bytes both ways (what the machine prints; what the owner
// types); text frames are JSON: from the server `{"type":"mode","mode":"read"|"write","reason"}`
// when the session starts and whenever it changes (another session took over: this one is demoted),
// from the client `{"type":"takeover"}`.
//
// A board's console comes through its relay on the lab host, reached through a tunnel its agent opens
// (tunnels.ts: lab hosts only dial out); the relay arbitrates who types across every session (streams
// and telnet alike) after checking the reservation's console secret. A QEMU VM's serial console has
// such a relay too once it is ready; a machine without one (a static host, a warm VM handed over)
// has its log, watched read-only from where it stands when the stream opens.
import { setTimeout as sleep } from 'node:timers/promises';
import { open, stat } from 'node:fs/promises';
import type { RawData, WebSocket } from 'ws';
import { RelayClient, type RelayRequest } from '../../protocol/console-relay.js';
import { callerOf, endWhenRevoked, type Tokens } from '../auth.js';
import type { ConsoleLogs } from '../console-logs.js';
import { ApiError, forbidden } from '../errors.js';
import type { Log } from '../../protocol/log.js';
import { consoleSecret } from '../scheduler/console-secret.js';
import type { Allocation, Reservation } from '../scheduler/records.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { reservationMachine } from './consoles.js';
import type { RouteTable } from './define.js';
import type { TunnelBroker } from '../tunnels.js';
import { authorizationOf, one, onlyParameters, upgradeRequired, type WebSocketRoute } from './websockets.js';

interface Source {
  /** Starts sending console bytes and mode changes; `ended` when the console closes. */
  start(send: (bytes: Buffer) => void, mode: (mode: 'read' | 'write', reason: string) => void, ended: () => void): void;
  write(bytes: Buffer): void;
  takeover(): void;
  close(): void;
}

/** The route as the OpenAPI document shows it; a plain GET (no upgrade) gets 426. */
export function consoleStreamRoute(table: RouteTable): void {
  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id/console/stream',
      summary:
        "A machine's console as a WebSocket (console-stream.ts): binary frames are console bytes both ways, text frames JSON mode changes; " +
        'read-only by default, `mode=write` for the owner (one writer at a time), `takeover=1` demotes the current writer',
      query: { machine: "which of the reservation's machines (default: the first board)", mode: 'read (default) or write', takeover: '1 to take typing over' },
      responses: {
        101: 'switching to the WebSocket protocol',
        403: 'not the owner (write, takeover) or not your reservation',
        409: 'ended, not ready, or a console that can only be watched',
        426: 'not a WebSocket request',
      },
    },
    upgradeRequired,
  );
}

export function consoleStreamSocket(scheduler: Scheduler, tokens: Tokens, consoles: ConsoleLogs, tunnels: TunnelBroker, log: Log): WebSocketRoute {
  const accept: WebSocketRoute['accept'] = async (request, match, url, take) => {
    onlyParameters(url, ['machine', 'mode', 'takeover']);
    const caller = callerOf(tokens, authorizationOf(request));
    endWhenRevoked(tokens, caller, request.socket); // revoking the token ends the stream at once
    const reservation = await scheduler.reservations.get(caller, match[1]);
    const mode = one(url, 'mode') ?? 'read';
    if (mode !== 'read' && mode !== 'write') throw new ApiError(400, 'invalid_parameter', 'mode is read or write');
    const takeover = one(url, 'takeover');
    if (takeover !== undefined && !['0', '1', 'true', 'false'].includes(takeover)) throw new ApiError(400, 'invalid_parameter', 'takeover is 1 or 0');
    const wantsTakeover = takeover === '1' || takeover === 'true';
    const owner = reservation.owner === caller.name;
    if ((mode === 'write' || wantsTakeover) && !owner) throw forbidden("only the reservation's owner types at its consoles");
    if (!scheduler.reservations.isLive(reservation.id)) throw new ApiError(409, 'lease_expired', `reservation ${reservation.id} is ${reservation.state}`);
    const machines = url.searchParams.getAll('machine');
    const allocation =
      reservationMachine(reservation, machines.length > 1 ? machines : machines[0]) ??
      reservation.allocations.find((candidate) => candidate.console) ??
      reservation.allocations.find((candidate) => candidate.machine !== '');
    if (!allocation) throw new ApiError(409, 'not_ready', `reservation ${reservation.id} has no machine yet`);
    const source = await sourceFor(reservation, allocation, wantsTakeover ? 'takeover' : mode);
    if (!(await take((ws) => bridge(ws, source, owner)))) source.close();
  };

  const sourceFor = async (reservation: Reservation, allocation: Allocation, request: RelayRequest): Promise<Source> => {
    const board = scheduler.inventory.get(allocation.machine)?.kind === 'board';
    if (allocation.console) {
      const { console } = allocation;
      const labHost = scheduler.inventory.get(allocation.machine)?.labHost ?? '';
      const relay = await tunnels
        .open(labHost, { reservationId: reservation.id, machine: allocation.machine, service: 'console', host: console.host, port: console.port })
        .then((stream) => RelayClient.over(stream, `${allocation.machine}'s console relay`, consoleSecret(reservation), request))
        .catch((error: unknown) => {
          log.warn({ reservation: reservation.id, machine: allocation.machine, error: (error as Error).message }, 'console stream failed');
          // A VM's console is also its log: a watcher watches that while the relay is gone (its agent restarted).
          if (!board && request === 'read') return undefined;
          const why = error instanceof ApiError ? `: ${error.message}` : '';
          throw new ApiError(502, 'console_unavailable', `the console of ${allocation.machine} cannot be reached now${why}`);
        });
      if (relay) return relaySource(relay);
    }
    if (board) {
      throw new ApiError(409, 'not_ready', `${allocation.machine}'s console opens to streams once it is ready`);
    }
    if (request !== 'read')
      throw new ApiError(409, 'console_read_only', `${allocation.machine}'s console can only be watched (it is a log, not a line to type on)`);
    return logSource(consoles.file(reservation.id, allocation.machine), () => scheduler.reservations.isLive(reservation.id));
  };

  const bridge = (ws: WebSocket, source: Source, owner: boolean) => {
    const sendJson = (message: object) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(message));
    source.start(
      (bytes) => ws.readyState === ws.OPEN && ws.send(bytes, { binary: true }),
      (mode, reason) => sendJson({ type: 'mode', mode, reason }),
      () => ws.close(1000, 'the console closed'),
    );
    ws.on('message', (data: RawData, binary: boolean) => {
      const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
      if (binary) return source.write(bytes);
      let message: { type?: unknown };
      try {
        message = JSON.parse(bytes.toString()) as { type?: unknown };
      } catch {
        return sendJson({ type: 'error', code: 'invalid_request', message: 'text messages are JSON' });
      }
      if (message.type === 'takeover' && owner) source.takeover();
      else
        sendJson({
          type: 'error',
          code: message.type === 'takeover' ? 'forbidden' : 'invalid_request',
          message: message.type === 'takeover' ? 'only the owner types' : 'unknown message type',
        });
    });
    ws.on('close', () => source.close());
    ws.on('error', () => ws.terminate());
  };

  // Keystrokes come in small frames; 64 KiB is plenty for a paste.
  return { pattern: /^\/v1\/reservations\/([^/]+)\/console\/stream$/, maxPayload: 64 * 1024, accept };
}

function relaySource(relay: RelayClient): Source {
  return {
    start(send, mode, ended) {
      relay.on('data', send);
      relay.on('mode', (change: { mode: 'read' | 'write'; reason: string }) => mode(change.mode, change.reason));
      relay.on('close', ended);
      mode(relay.mode, relay.mode === 'write' ? 'typing' : 'watching');
    },
    write: (bytes) => relay.write(bytes),
    takeover: () => relay.takeover(),
    close: () => relay.close(),
  };
}

/** A console log watched from its current end, while the reservation lives. */
function logSource(file: string, live: () => boolean): Source {
  let closed = false;
  return {
    start(send, mode, ended) {
      void (async () => {
        let offset = await stat(file).then(
          (info) => info.size,
          () => 0,
        );
        // Told once the start is fixed: whatever the log gets after this message reaches the watcher.
        mode('read', "this machine's console can only be watched");
        while (!closed && live()) {
          const size = await stat(file).then(
            (info) => info.size,
            () => 0,
          );
          if (size > offset) {
            const handle = await open(file, 'r');
            try {
              const buffer = Buffer.alloc(Math.min(size - offset, 64 * 1024));
              const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
              offset += bytesRead;
              send(buffer.subarray(0, bytesRead));
            } finally {
              await handle.close();
            }
            continue;
          }
          await sleep(250);
        }
        if (!closed) ended();
      })().catch(() => ended());
    },
    write: () => undefined,
    takeover: () => undefined,
    close: () => (closed = true),
  };
}
