// `paddock serve`: the embedded default. One process runs the API (Koa + SQLite) and, unless the
// config turns it off, one local lab-host agent that talks to it over loopback HTTP, so the path a
// remote lab host (`paddock agent`) uses is always the path exercised.
import { startApi, type RunningApi, type ServeOptions } from '../api/serve.js';
import type { Agent, AgentOptions } from '../lab-host/agent.js';
import { createLog } from '../protocol/log.js';

export type { ServeOptions };
export type RunningServer = Omit<RunningApi, 'agentToken'>;

export async function serve(options: ServeOptions): Promise<RunningServer> {
  const log = options.log ?? createLog({ component: 'api' });
  const { agentToken, ...api } = await startApi({ ...options, log });
  const { config, url } = api;
  const agent =
    agentToken === undefined
      ? Promise.resolve(undefined)
      : startAgent({
          url,
          token: agentToken,
          name: config.agent.name,
          dataDir: config.dataDir,
          concurrency: config.agent.concurrency,
          provisionTimeoutMs: config.agent.provisionTimeout * 1000,
          sweepIntervalMs: config.agent.sweepInterval * 1000,
          checkIntervalMs: config.agent.checkInterval * 1000,
          imageIdleTimeoutMs: config.images.idleTimeout * 1000,
          consoleLogMax: config.consoles.maxLogSize,
          log: log.child({ component: 'agent', agent: config.agent.name }),
          ...(api.metrics ? { metrics: api.metrics.registry } : {}),
        }).catch((error: unknown) => {
          log.error({ error: (error as Error).message }, 'the embedded agent did not start');
          return undefined;
        });
  let closing: Promise<void> | undefined;
  return {
    ...api,
    close: () =>
      (closing ??= (async () => {
        await (await agent)?.stop();
        await api.close();
      })()),
  };
}

/**
 * The agent, and the HTTP client and provisioners behind it, are loaded once the API listens: the
 * API serves without them, and the agent reaches it over HTTP as any lab host does, which may come
 * later too.
 */
async function startAgent(options: AgentOptions): Promise<Agent> {
  const { Agent } = await import('../lab-host/agent.js');
  const agent = new Agent(options);
  agent.start();
  return agent;
}
