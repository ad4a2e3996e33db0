// Tunnels through the API (api/tunnels.ts): the owner's WebSocket GET /v1/reservations/:id/tunnel
// (`paddock tunnel`, the client library's `run` and `copy` where access says `via: paddock`) and
// the lab-host agent's side: it long-polls POST /v1/agent/tunnels/claim, connects to the port,
// and opens the WebSocket GET /v1/agent/tunnels/:id, or says why it could not
// (POST /v1/agent/tunnels/:id/fail). Binary frames carry the port's bytes both ways.
//
// Only the reservation's owner opens one, only to a ready machine of a live reservation, only to
// the ports its kind declares: SSH (`port=ssh` or 22) where the machine has it, and a board's
// console relay (`port=console`). The agent's end must be the machine's own lab host's agent.
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import type { Caller, Role } from '../../protocol/api.js';
import type { TunnelService } from '../../protocol/agent.js';
import { callerOf, endWhenRevoked, type Tokens } from '../auth.js';
import { ApiError, forbidden } from '../errors.js';
import { machineText, name } from '../fields.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { TunnelBroker } from '../tunnels.js';
import { reservationMachine } from './consoles.js';
import { checkAgent } from './agent.js';
import { hungUp, type RouteTable } from './define.js';
import { one, onlyParameters, upgradeRequired, type WebSocketRoute } from './websockets.js';

const claimSchema = z.strictObject({ agent: name('agent', { at: true }), wait: z.number().min(0).max(60).default(0) });
const failSchema = z.strictObject({ agent: name('agent', { at: true }), reason: machineText(2000) });

export function tunnelRoutes(table: RouteTable, broker: TunnelBroker): void {
  const roles: Role[] = ['agent', 'admin'];
  table.define(
    {
      method: 'get',
      path: '/v1/reservations/:id/tunnel',
      summary:
        "A stream to a port of one of the reservation's ready machines, bridged by its lab host (a WebSocket; binary frames both ways; the owner only): " +
        '`port` ssh (or 22, the default) or console (a board’s console relay)',
      query: { machine: "which of the reservation's machines (default: the first)", port: 'ssh (22) or console' },
      responses: {
        101: 'switching to the WebSocket protocol',
        400: 'a port the machine does not offer',
        403: 'not the owner',
        409: 'ended, not ready, or its lab host is silent',
        426: 'not a WebSocket request',
        502: 'the lab host cannot reach the port (tunnel_failed)',
        504: 'the lab host did not answer (tunnel_timeout)',
      },
    },
    upgradeRequired,
  );
  table.define(
    {
      method: 'get',
      path: '/v1/agent/tunnels/:id',
      summary: "The lab host's end of a tunnel it was asked for (a WebSocket, by the machine's own lab host's agent)",
      roles,
      responses: { 101: 'switching to the WebSocket protocol', 404: 'no such tunnel waits for this agent', 426: 'not a WebSocket request' },
    },
    upgradeRequired,
  );
  table.define(
    {
      method: 'post',
      path: '/v1/agent/tunnels/claim',
      summary: 'Take the tunnels the owners asked of this lab host (long-polls up to `wait` seconds)',
      roles,
      body: { schema: claimSchema, name: 'tunnel claim' },
    },
    async (ctx, claim) => {
      checkAgent(ctx, claim.agent);
      ctx.body = { tunnels: await broker.claim(claim.agent, claim.wait * 1000, hungUp(ctx)) };
    },
  );
  table.define(
    {
      method: 'post',
      path: '/v1/agent/tunnels/:id/fail',
      summary: 'Say why a tunnel cannot be opened (the port does not answer on the lab host)',
      roles,
      body: { schema: failSchema, name: 'tunnel failure' },
      responses: { 204: 'the owner is told', 404: 'no such tunnel waits for this agent' },
    },
    (ctx, failure) => {
      checkAgent(ctx, failure.agent);
      const agent = (ctx.state.caller as Caller).role === 'agent' ? failure.agent : undefined;
      if (!broker.failed(ctx.params.id, agent, failure.reason))
        throw new ApiError(404, 'not_found', `no tunnel ${ctx.params.id} waits for agent ${failure.agent}`);
      ctx.status = 204;
    },
  );
}

/** 22 and ssh name a machine's SSH port; console its console relay. */
function serviceOf(port: string): TunnelService {
  if (port === 'ssh' || port === '22') return 'ssh';
  if (port === 'console') return 'console';
  throw new ApiError(400, 'port_not_allowed', `a tunnel goes to port ssh (22) or console, not ${JSON.stringify(port.slice(0, 20))}`, {
    port: port.slice(0, 20),
  });
}

export function tunnelSockets(scheduler: Scheduler, tokens: Tokens, broker: TunnelBroker): WebSocketRoute[] {
  /** Open tunnels by reservation: closed once the reservation has ended. */
  const open = new Map<Duplex, string>();
  const sweeper = setInterval(() => {
    for (const [stream, reservationId] of open) if (!scheduler.reservations.isLive(reservationId)) stream.destroy();
  }, 2000);
  sweeper.unref();

  const owner: WebSocketRoute = {
    pattern: /^\/v1\/reservations\/([^/]+)\/tunnel$/,
    maxPayload: 1024 * 1024,
    async accept(request, match, url, take) {
      onlyParameters(url, ['machine', 'port']);
      const caller = callerOf(tokens, request.headers.authorization);
      endWhenRevoked(tokens, caller, request.socket);
      const reservation = await scheduler.reservations.get(caller, match[1]);
      if (reservation.owner !== caller.name) throw forbidden("only the reservation's owner opens tunnels to its machines");
      if (!scheduler.reservations.isLive(reservation.id)) throw new ApiError(409, 'lease_expired', `reservation ${reservation.id} is ${reservation.state}`);
      const allocation = reservationMachine(reservation, one(url, 'machine')) ?? reservation.allocations[0];
      const service = serviceOf(one(url, 'port') ?? 'ssh');
      if (!allocation || allocation.state !== 'ready') throw new ApiError(409, 'not_ready', `reservation ${reservation.id}'s machine is not ready`);
      const target =
        service === 'ssh'
          ? allocation.host !== undefined && allocation.port !== undefined
            ? { host: allocation.host, port: allocation.port }
            : undefined
          : allocation.console;
      if (!target) throw new ApiError(400, 'port_not_allowed', `${allocation.machine} has no ${service === 'ssh' ? 'SSH' : 'console relay'}`);
      if (allocation.labHostSilentSince !== undefined)
        throw new ApiError(409, 'lab_host_offline', `the lab host of ${allocation.machine} is silent since ${allocation.labHostSilentSince}`);
      const labHost = scheduler.inventory.get(allocation.machine)?.labHost ?? '';
      const hangUp = new AbortController();
      request.socket.once('close', () => hangUp.abort());
      const agentEnd = await broker.open(labHost, { reservationId: reservation.id, machine: allocation.machine, service, ...target }, hangUp.signal);
      const { createWebSocketStream } = await import('ws');
      const upgraded = await take((ws) => {
        // Bridged at once: the owner's first bytes come right after the upgrade.
        const ownerEnd = bridge(createWebSocketStream(ws, { highWaterMark: 1 << 20 }), agentEnd);
        open.set(ownerEnd, reservation.id);
        ownerEnd.once('close', () => open.delete(ownerEnd));
      });
      if (!upgraded) agentEnd.destroy();
    },
  };

  const agent: WebSocketRoute = {
    pattern: /^\/v1\/agent\/tunnels\/(t-[0-9a-f]{32})$/,
    maxPayload: 1024 * 1024,
    async accept(request, match, url, take) {
      onlyParameters(url, []);
      const caller = callerOf(tokens, request.headers.authorization);
      endWhenRevoked(tokens, caller, request.socket);
      if (caller.role !== 'agent' && caller.role !== 'admin') throw forbidden('only lab-host agents open the far end of tunnels');
      if (!broker.waitsFor(match[1], caller.role === 'agent' ? caller.name : undefined))
        throw new ApiError(404, 'not_found', `no tunnel ${match[1]} waits for ${caller.name}`);
      const { createWebSocketStream } = await import('ws');
      await take((ws) => broker.connected(match[1], createWebSocketStream(ws, { highWaterMark: 1 << 20 })));
    },
  };
  return [owner, agent];
}

/** Pipes the owner's end and the agent's into each other; either end closing closes both. */
function bridge(ownerEnd: Duplex, agentEnd: Duplex): Duplex {
  const close = () => {
    ownerEnd.destroy();
    agentEnd.destroy();
  };
  for (const stream of [ownerEnd, agentEnd]) {
    stream.once('error', close);
    stream.once('close', close);
  }
  ownerEnd.pipe(agentEnd);
  agentEnd.pipe(ownerEnd);
  return ownerEnd;
}
