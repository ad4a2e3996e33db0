// Which lab hosts are heard from. A lab host's agent is heard while one of its claims is open (the
// claim long-polls, so a live agent nearly always has one) and whenever it claims or reports; one
// not heard for the heartbeat timeout is silent, and agents.ts takes its machines offline. When the
// lab hosts the machines name were last heard is stored (at most once a second each), so it is
// still shown after a restart; silence is counted from the restart all the same, since no agent
// could be heard while the API was down. Only bookkeeping here: what silence does to machines and
// reservations is agents.ts's.
import type { AgentView } from '../../protocol/api.js';
import type { LabHostRow } from '../db/index.js';
import { olderThan } from '../../protocol/version.js';

/** What an agent says of itself in a claim. */
export interface AgentInfo {
  version?: string;
  /** Its clock when it sent the claim (ISO 8601). */
  clock?: string;
}

/** An agent whose clock is off by more than this is told about on `paddock agents ls`. */
export const clockToleranceSeconds = 5;

interface LabHost {
  /** When it was last heard; undefined if not since the API started. */
  heardAt?: number;
  /** Where silence is counted from when it was never heard: the API's start. */
  since: number;
  /** Open claims, each with its "the agent went away" check. */
  open: Set<() => boolean>;
  /** Set while silent. */
  silentSince?: number;
  version?: string;
  clockOffsetMs?: number;
  /** A lab host the machines name: when it was heard is stored. */
  named?: boolean;
  /** As stored: when it was last heard, by this API or an earlier run of it. */
  storedHeardAt?: number;
}

/** Lab hosts' rows are written at most this often each. */
const storeEveryMs = 1000;

export class LabHosts {
  private readonly hosts = new Map<string, LabHost>();

  constructor(
    private readonly timeoutMs: number,
    private readonly now: () => number,
    private readonly apiVersion: string,
  ) {}

  /**
   * The lab hosts the machines name, at start. One whose machines were stored offline stays
   * silent (since then) until its agent is heard; the others get a heartbeat timeout to show up.
   */
  start(offlineSince: ReadonlyMap<string, number | undefined>, stored: readonly LabHostRow[] = []): void {
    const now = this.now();
    const rows = new Map(stored.map((row) => [row.name, row]));
    for (const [name, since] of offlineSince) {
      const row = rows.get(name);
      this.hosts.set(name, {
        since: now,
        open: new Set(),
        named: true,
        ...(since === undefined ? {} : { silentSince: since }),
        ...(row ? { storedHeardAt: new Date(row.lastHeard).getTime(), ...(row.version === null ? {} : { version: row.version }) } : {}),
      });
    }
  }

  /**
   * Lab hosts the machines name since a configuration reload: their `lastHeard` is stored from now
   * on, and one never heard gets a heartbeat timeout from now to show up, as at start.
   */
  named(names: Iterable<string>): void {
    for (const name of names) this.host(name).named = true;
  }

  /** The row to store for a lab host the machines name, when it is due (heard a second or more after the last one stored). */
  due(name: string): LabHostRow | undefined {
    const host = this.hosts.get(name);
    if (!host?.named || host.heardAt === undefined || host.heardAt - (host.storedHeardAt ?? -Infinity) < storeEveryMs) return undefined;
    host.storedHeardAt = host.heardAt;
    return { name, lastHeard: new Date(host.heardAt), version: host.version ?? null };
  }

  /** The agent was heard; says whether its lab host was silent until now. */
  heard(name: string, info?: AgentInfo): boolean {
    const host = this.host(name);
    const now = this.now();
    host.heardAt = now;
    if (info?.version !== undefined) host.version = info.version;
    const clock = info?.clock === undefined ? NaN : Date.parse(info.clock);
    if (Number.isFinite(clock)) host.clockOffsetMs = clock - now;
    const wasSilent = host.silentSince !== undefined;
    host.silentSince = undefined;
    return wasSilent;
  }

  /** A claim is open until the returned function is called; `gone` says the agent hung up meanwhile. */
  claimOpened(name: string, gone: () => boolean): () => void {
    const host = this.host(name);
    host.open.add(gone);
    return () => {
      host.open.delete(gone);
      if (!gone()) host.heardAt = this.now();
    };
  }

  /** Every silent lab host with since when: newly silent ones are marked so. */
  silent(): Map<string, number> {
    const now = this.now();
    const silent = new Map<string, number>();
    for (const [name, host] of this.hosts) {
      if ([...host.open].some((gone) => !gone())) host.heardAt = now;
      const last = host.heardAt ?? host.since;
      if (host.silentSince === undefined && now - last > this.timeoutMs) host.silentSince = last + this.timeoutMs;
      if (host.silentSince !== undefined) silent.set(name, host.silentSince);
    }
    return silent;
  }

  names(): string[] {
    return [...this.hosts.keys()];
  }

  /** What the API knows of the lab host; `unreachable`: its machines its agent reports it cannot reach. */
  view(name: string, machines: string[], tasks: string[], unreachable: string[] = []): AgentView {
    const host = this.host(name);
    const iso = (ms: number) => new Date(ms).toISOString();
    const warnings: string[] = [];
    if (host.heardAt === undefined) warnings.push('not heard since the API started');
    else if (host.version === undefined) warnings.push('did not say its version');
    else if (olderThan(host.version, this.apiVersion)) warnings.push(`version ${host.version} is older than the API's ${this.apiVersion}`);
    const offset = host.clockOffsetMs === undefined ? undefined : Math.round(host.clockOffsetMs / 100) / 10;
    if (offset !== undefined && Math.abs(offset) > clockToleranceSeconds) {
      warnings.push(`its clock is ${Math.abs(offset)}s ${offset > 0 ? 'ahead of' : 'behind'} the API's (more than ${clockToleranceSeconds}s)`);
    }
    if (unreachable.length > 0) {
      const named = unreachable.length > 5 ? `${unreachable.slice(0, 5).join(', ')}, …` : unreachable.join(', ');
      warnings.push(`it cannot reach ${unreachable.length} of its machines: ${named} (paddock machines ls says why)`);
    }
    return {
      name,
      state: host.silentSince === undefined ? 'online' : 'silent',
      ...(host.version === undefined ? {} : { version: host.version }),
      ...(host.heardAt === undefined && host.storedHeardAt === undefined ? {} : { lastHeard: iso(host.heardAt ?? host.storedHeardAt!) }),
      ...(host.silentSince === undefined ? {} : { silentSince: iso(host.silentSince) }),
      ...(offset === undefined ? {} : { clockOffsetSeconds: offset }),
      machines,
      tasks,
      warnings,
    };
  }

  private host(name: string): LabHost {
    let host = this.hosts.get(name);
    if (!host) {
      host = { since: this.now(), open: new Set() };
      this.hosts.set(name, host);
    }
    return host;
  }
}
