// `paddock agent --name NAME`: a lab-host agent on its own, the same one `paddock serve` embeds. It
// dials out to PADDOCK_URL with a token of role agent named NAME (from --token-file or
// PADDOCK_TOKEN), pulls the provisioning and release work for the machines of its kinds, and runs
// it on this host until SIGTERM or SIGINT.
import path from 'node:path';
import { Agent } from '../lab-host/agent.js';
import { Paddock, PaddockError } from '../client/index.js';
import { TokenError, workerToken } from '../protocol/worker.js';
import { machineKinds } from '../provisioners/registry.js';
import { createLog, type Log } from '../protocol/log.js';
import { serveMetrics } from '../protocol/metrics.js';
import { metricsAddress } from './metrics.js';

const knownKinds = () => Object.keys(machineKinds);

export interface AgentCommandOptions {
  name: string;
  tokenFile?: string;
  data: string;
  kinds?: string;
  /** Checked by the command line (1 to 256, as the config's agent.concurrency). */
  concurrency: number;
  /** Seconds between checks of its machines (0: none); checked by the command line. */
  checkInterval?: number;
  /** Its log (component agent); JSON lines on stderr when not given. */
  log?: Log;
  /** Where to serve its metrics (host:port), checked by the command line; none when not given. */
  metricsListen?: string;
}

export async function runAgent(options: AgentCommandOptions): Promise<Agent> {
  let token: string;
  try {
    token = await workerToken(options.tokenFile);
  } catch (error) {
    if (error instanceof TokenError) throw new PaddockError(`agent: ${error.message}`, 'configuration');
    throw error;
  }
  const kinds = options.kinds?.split(',').filter(Boolean);
  const unknown = kinds?.filter((kind) => !knownKinds().includes(kind)) ?? [];
  if (unknown.length > 0) throw new PaddockError(`agent: unknown kind ${unknown.join(', ')}; the kinds are ${knownKinds().join(', ')}`, 'configuration');
  const paddock = new Paddock({ token }); // checks PADDOCK_URL
  const url = process.env.PADDOCK_URL!;
  const me = await paddock.whoami();
  if (me.role !== 'agent')
    throw new PaddockError(`an agent needs a token of role agent; this one is ${me.role} (paddock token create ${options.name} --role agent)`, 'forbidden');
  if (me.name !== options.name)
    throw new PaddockError(`this token is for agent ${me.name}, not ${options.name}: an agent token speaks only for its own name`, 'forbidden');
  const dataDir = path.resolve(options.data);
  const log = (options.log ?? createLog({ component: 'agent' })).child({ component: 'agent', agent: options.name });
  const agent = new Agent({
    url,
    token,
    name: options.name,
    dataDir,
    concurrency: options.concurrency,
    ...(options.checkInterval === undefined ? {} : { checkIntervalMs: options.checkInterval * 1000 }),
    ...(kinds ? { kinds } : {}),
    log,
  });
  const metrics = options.metricsListen ? await serveMetrics(agent.metrics.withProcessMetrics(), metricsAddress(options.metricsListen)) : undefined;
  agent.start();
  log.info({ url: paddock.http.where, kinds: kinds ?? knownKinds(), dataDir }, 'pulling work'); // no user:password in a log
  if (metrics) log.info({ url: metrics.url }, 'metrics served');
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    void agent
      .stop()
      .then(() => metrics?.close())
      .then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  return agent;
}
