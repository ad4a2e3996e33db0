// `paddock serve`: the embedded default. One process runs the API (Koa + SQLite) and, unless the
// config turns it off, one local lab-host agent that talks to it over loopback HTTP, so the path a
// remote lab host (`paddock agent`) uses is always the path exercised.
import { startApi, type RunningApi, type ServeOptions } from '../api/serve.js';
import { Agent } from '../lab-host/agent.js';

export type { ServeOptions };
export type RunningServer = Omit<RunningApi, 'agentToken'>;

export async function serve(options: ServeOptions): Promise<RunningServer> {
  const log = options.log ?? ((line: string) => console.error(line));
  const { agentToken, ...api } = await startApi({ ...options, log });
  const { config, url } = api;
  let agent: Agent | undefined;
  if (agentToken !== undefined) {
    agent = new Agent({
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
      log,
    });
    agent.start();
  }
  let closing: Promise<void> | undefined;
  return {
    ...api,
    close: () =>
      (closing ??= (async () => {
        await agent?.stop();
        await api.close();
      })()),
  };
}
