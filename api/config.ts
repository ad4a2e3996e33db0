// The server's configuration file (YAML): where it listens, where it keeps data, lease and queue
// policy, and the machine inventory. Validated once at load; every error names the file, the line,
// the path inside the document and the problem. Unknown keys are rejected everywhere.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { load as loadYaml, type YAMLException } from 'js-yaml';
import type * as Yaml from 'yaml';
import { z } from 'zod';
import { healthDefaults } from './scheduler/health.js';
import { provisioningsKept } from './scheduler/store.js';
import { parseDuration, parseQuantity } from './scheduler/units.js';
import { getKind } from '../provisioners/registry.js';
import type { KindDescriptor } from '../provisioners/types.js';
import { networkTransports, type NetworkTransport } from '../protocol/repository.js';

const duration = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const seconds = parseDuration(value);
  if (seconds === null) {
    ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(value)} (use seconds or 30s, 10m, 2h, 1d)` });
    return z.NEVER;
  }
  return seconds;
});

const quantity = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const number = typeof value === 'number' ? value : parseQuantity(value);
  if (number === null || !Number.isFinite(number) || number < 0) {
    ctx.addIssue({ code: 'custom', message: `not a quantity: ${JSON.stringify(value)} (use 4, 2GiB, 512MiB, 1GB)` });
    return z.NEVER;
  }
  return number;
});

const nameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'names use letters, digits, . _ - (up to 63)');
const labelKey = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]*$/, 'label keys use letters, digits, _ . -');

/**
 * Qualification: a machine seen for the first time, or activated after quarantine or maintenance,
 * boots `boots` times from `image` and runs `check` over SSH each time; it goes into service when
 * `pass` of them passed (default: 95 % of the boots, 19 of 20), else it is quarantined.
 */
const qualifySchema = z
  .strictObject({
    /** The pool's reference image (NAME[:TAG]); kinds that boot no image (static hosts) leave it out. */
    image: z.string().min(1).max(200).optional(),
    /** A shell command run on the machine as its login user; exit 0 passes the boot. */
    check: z
      .string()
      .min(1)
      .max(4096)
      .refine((command) => !/\p{Cc}/u.test(command.replace(/[\t\n]/g, '')), 'control characters are refused in the check command'),
    boots: z.number().int().min(1).max(1000).default(20),
    pass: z.number().int().min(1).optional(),
  })
  .transform((qualify) => ({ ...qualify, pass: qualify.pass ?? Math.ceil(qualify.boots * 0.95) }))
  .refine((qualify) => qualify.pass <= qualify.boots, { message: 'pass cannot be more than boots', path: ['pass'] });
/** One image a pool keeps warm: how many machines, and after how long without a request for it they go back to cold use. */
const warmSchema = z.strictObject({
  image: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$/, 'an image is NAME or NAME:TAG')
    .transform((ref) => (ref.includes(':') ? ref : `${ref}:latest`)),
  count: z.number().int().min(1).max(10000),
  idle: duration.default(1800),
});

const machineSchema = z.strictObject({
  name: nameSchema,
  kind: z.string(),
  labels: z.record(labelKey, z.union([z.string(), z.number(), z.boolean()]).transform(String)).default({}),
  capacities: z.record(labelKey, quantity).default({}),
  settings: z.unknown().optional(),
  /** The lab host whose agent (`paddock agent --name NAME`) provisions it; by default the embedded agent's (`agent.name`). */
  labHost: nameSchema.optional(),
  /**
   * How owners reach it: `direct` (its address as its lab host reports it) or `paddock` (through a
   * tunnel via the API, for machines only their lab host can reach). Default: its lab host's
   * (`labHosts.NAME.access`), else direct.
   */
  access: z.enum(['direct', 'paddock']).optional(),
  /** A pool of this many identical machines (VM slots), named NAME-1 … NAME-N. */
  count: z.number().int().min(1).max(10000).optional(),
  /** Boot it this many times before it goes into service (first seen, or activated): see qualifySchema. */
  qualify: qualifySchema.optional(),
  /** Machines of the entry kept booted from an image ahead of demand (api/scheduler/warm.ts). */
  warm: z.array(warmSchema).min(1).max(16).optional(),
});

/** A quota: a count or a size (`20GiB`), or `unlimited`. */
const quotaLimit = z.union([z.number(), z.string()]).transform((value, ctx) => {
  if (value === 'unlimited') return undefined;
  const number = typeof value === 'number' ? value : parseQuantity(value);
  if (number === null || !Number.isSafeInteger(number) || number < 0) {
    ctx.addIssue({ code: 'custom', message: `not a quota: ${JSON.stringify(value)} (a whole number such as 100 or 20GiB, or unlimited)` });
    return z.NEVER;
  }
  return number;
});

const quotaLimitsSchema = z.strictObject({
  reservations: quotaLimit.optional(),
  queued: quotaLimit.optional(),
  machines: quotaLimit.optional(),
  imageBytes: quotaLimit.optional(),
  uploads: quotaLimit.optional(),
  runs: quotaLimit.optional(),
});

export const defaultQuotas = { reservations: 200, queued: 100, machines: 64, imageBytes: 100 * 1024 ** 3, uploads: 4, runs: 100 };

const listenSchema = z
  .string()
  .regex(/^[^:]+:\d+$|^\[[0-9a-fA-F:]+\]:\d+$/, 'listen is host:port, e.g. 127.0.0.1:7300')
  .transform((listen) => {
    const at = listen.lastIndexOf(':');
    return { host: listen.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(listen.slice(at + 1)) };
  });

/** A local root: an absolute folder; `{user}` in it stands for the job's owner. */
const localRoot = z
  .string()
  .refine(
    (value) => path.isAbsolute(value) && !value.split('/').includes('..') && !/\p{Cc}/u.test(value),
    'a local root is an absolute path without .. (it may hold {user})',
  );

const repositoryDefaults = {
  transports: ['https', 'ssh'] as NetworkTransport[],
  localRoots: [],
  concurrency: 8,
  perUser: 2,
  queuePerUser: 16,
  timeout: 20,
  maxListing: 1024 * 1024,
};
/** Which repositories jobs may name and what resolving a ref may cost the API host (README: Jobs and runner hosts). */
/** A PostgreSQL URL; the message never repeats it (it may hold a password). */
const databaseSchema = z
  .string()
  .refine((url) => /^postgres(ql)?:\/\/[^\s]+$/.test(url) && URL.canParse(url), 'database is a PostgreSQL URL: postgres://user@host:5432/name');

const repositoriesSchema = z.strictObject({
  transports: z.array(z.enum(networkTransports)).default(repositoryDefaults.transports),
  localRoots: z.array(localRoot).default([]),
  /** ls-remote processes at once on the API host, and per user; more wait their turn (up to timeout). */
  concurrency: z.number().int().min(1).max(256).default(repositoryDefaults.concurrency),
  perUser: z.number().int().min(1).max(256).default(repositoryDefaults.perUser),
  /** Resolutions of one user that may wait; more get 429 resolutions_busy at once. */
  queuePerUser: z.number().int().min(0).max(1024).default(repositoryDefaults.queuePerUser),
  /** How long one ls-remote may take. */
  timeout: duration.refine((seconds) => seconds > 0 && seconds <= 600, 'from 1s to 10m').default(repositoryDefaults.timeout),
  /** The most ls-remote output read for one ref. */
  maxListing: quantity.refine((bytes) => bytes >= 1024 && bytes <= 256 * 1024 ** 2, 'from 1KiB to 256MiB').default(repositoryDefaults.maxListing),
});

export const configSchema = z.strictObject({
  listen: listenSchema.default({ host: '127.0.0.1', port: 7300 }),
  /** Prometheus metrics at /metrics on an address of their own, without a token (api/metrics.ts); none unless given. */
  metrics: z.strictObject({ listen: listenSchema.optional() }).default({}),
  dataDir: z.string().default('paddock-data'),
  /**
   * Where the data is kept: the SQLite file DATA/paddock.sqlite unless a PostgreSQL database is named
   * (`postgres://user@host:5432/paddock`; a password is better in ~/.pgpass or PGPASSWORD than here).
   * Several API servers share one PostgreSQL database: one leads (api/leader.ts).
   */
  /**
   * The URL clients reach this server at, where followers send them while it leads (several API
   * servers on PostgreSQL); by default the address it listens on.
   */
  advertise: z
    .string()
    .refine(
      (url) => /^https?:\/\/[^\s/@]+(\/[^\s]*)?$/.test(url) && URL.canParse(url),
      'advertise is the http(s) URL clients reach this server at, e.g. http://paddock-a:7300',
    )
    .transform((url) => url.replace(/\/+$/, ''))
    .optional(),
  database: databaseSchema.optional(),
  lease: z.strictObject({ default: duration.default(1800), max: duration.default(8 * 3600) }).default({ default: 1800, max: 28800 }),
  queue: z
    .strictObject({
      timeout: duration.default(3600),
      /** One step of priority per this many seconds waited. */
      aging: duration.default(60),
      /** After this long, a waiting request keeps the machines it could use from later requests. */
      starvation: duration.default(300),
    })
    .default({ timeout: 3600, aging: 60, starvation: 300 }),
  reaper: z.strictObject({ interval: duration.default(1) }).default({ interval: 1 }),
  health: z
    .strictObject({
      /** Infrastructure failures in a row that quarantine a machine. */
      quarantineAfter: z.number().int().min(1).default(3),
      /** How many times a member whose machine failed while being provisioned moves to another machine. */
      retries: z.number().int().min(0).max(20).default(2),
      /** The health score is the share of a machine's last `window` provisionings that came up. */
      window: z.number().int().min(1).max(provisioningsKept).default(healthDefaults.window),
      /** A score under `minScore` quarantines a machine once its window holds `minSamples` provisionings. */
      minScore: z.number().min(0).max(1).default(healthDefaults.minScore),
      minSamples: z.number().int().min(1).max(provisioningsKept).default(healthDefaults.minSamples),
    })
    .default({ quarantineAfter: 3, retries: 2, ...healthDefaults }),
  agent: z
    .strictObject({
      enabled: z.boolean().default(true),
      name: nameSchema.default('local'),
      concurrency: z.number().int().min(1).max(256).default(16),
      provisionTimeout: duration.default(600),
      /** How often the agent looks for what ended reservations left behind (VMs, servers, keys). */
      sweepInterval: duration.default(60),
      /** How often the agent checks that it can reach its machines (serial devices, PDUs, SSH ports); 0 checks none. */
      checkInterval: duration.default(30),
    })
    .default({ enabled: true, name: 'local', concurrency: 16, provisionTimeout: 600, sweepInterval: 60, checkInterval: 30 }),
  /** Settings per lab host, by name: `access` for all its machines (a machine's own `access` wins). */
  labHosts: z.record(nameSchema, z.strictObject({ access: z.enum(['direct', 'paddock']).default('direct') })).default({}),
  agents: z
    .strictObject({
      /**
       * A lab host's agent not heard from for this long (no claim open, no report) is silent: its
       * machines go offline until it is heard again.
       */
      heartbeatTimeout: duration.refine((seconds) => seconds >= 1, 'at least 1s').default(30),
    })
    .default({ heartbeatTimeout: 30 }),
  images: z
    .strictObject({
      /** The largest upload accepted. */
      maxSize: quantity.default(8 * 1024 ** 3),
      /** Free disk no upload may take: the floor kept for the database and the logs. */
      reserve: quantity.default(256 * 1024 ** 2),
      /** An image upload or download that moves no byte for this long is cut; there is no limit on its whole length. */
      idleTimeout: duration.default(60),
      /** The longest expiry a temporary image may ask for. */
      maxExpiry: duration.default(30 * 86400),
      /** How often expired images and unreferenced files are collected. */
      collectInterval: duration.default(60),
    })
    .default({ maxSize: 8 * 1024 ** 3, reserve: 256 * 1024 ** 2, idleTimeout: 60, maxExpiry: 30 * 86400, collectInterval: 60 }),
  consoles: z
    .strictObject({
      /** The most bytes one console log keeps: a VM's or a board's log per reservation keeps its head and a marker; a board's own log is rotated. */
      maxLogSize: quantity.default(16 * 1024 ** 2),
      /**
       * Board consoles are reached through the API's authenticated console stream. With `telnet`,
       * the owner also gets the relay's address and the reservation's console secret, to telnet to
       * it directly (the relay asks for the secret first).
       */
      telnet: z.boolean().default(false),
    })
    .default({ maxLogSize: 16 * 1024 ** 2, telnet: false }),
  runners: z
    .strictObject({
      /** A runner host not heard from for this long is taken for dead: its runs fail, their reservations are released. */
      heartbeatTimeout: duration.default(30),
      /** The longest output kept per run. */
      maxLogSize: quantity.default(64 * 1024 ** 2),
    })
    .default({ heartbeatTimeout: 30, maxLogSize: 64 * 1024 ** 2 }),
  quotas: z
    .strictObject({
      /** What every non-admin token may hold, queue and store at once (see api/quotas.ts). */
      default: quotaLimitsSchema.transform((limits) => ({ ...defaultQuotas, ...limits })).default(defaultQuotas),
      /** Per token name: limits that replace the default ones they name. */
      tokens: z.record(z.string(), quotaLimitsSchema).default({}),
    })
    .default({ default: defaultQuotas, tokens: {} }),
  repositories: repositoriesSchema.default(repositoryDefaults),
  machines: z.array(machineSchema).default([]),
});

/** A parsed config: every machine names its lab host (the embedded agent's when it named none). */
export type Config = Omit<z.infer<typeof configSchema>, 'machines'> & {
  /** `warmPool`: the entry a machine with `warm` came from (its pool's name). */
  machines: (z.infer<typeof configSchema>['machines'][number] & { labHost: string; access: 'direct' | 'paddock'; warmPool?: string })[];
};

/**
 * What `paddock serve` runs without a config file: the API on 127.0.0.1:7300, data in
 * ./paddock-data, and a pool of two local QEMU VM slots (1 CPU, 256 MiB, x86_64, TCG) that boot
 * images uploaded to Paddock.
 */
export const embeddedConfig = `
machines:
  - name: vm
    kind: qemu
    count: 2
    labels: { arch: x86_64 }
    capacities: { cpus: 1, ram: 256MiB }
`;
export type MachineConfig = Config['machines'][number];

/**
 * One problem of a config file: where it is (1-based line and column of the node at fault, when
 * the text has it), the path in the document (`machines[2].settings.port`; empty for the file
 * itself) and what is wrong.
 */
export interface ConfigProblem {
  line?: number;
  column?: number;
  path: string;
  message: string;
}

/** `line N: path: message`, as a refused start prints it. */
export function formatProblem(problem: ConfigProblem): string {
  return `${problem.line === undefined ? '' : `line ${problem.line}: `}${problem.path ? `${problem.path}: ` : ''}${problem.message}`;
}

export class ConfigError extends Error {
  /** Each problem as one line (formatProblem). */
  readonly problems: string[];
  /** Each problem with its line and column. */
  readonly issues: ConfigProblem[];

  constructor(
    readonly file: string,
    problems: (string | ConfigProblem)[],
  ) {
    const issues = problems.map((problem) => (typeof problem === 'string' ? { path: '', message: problem } : problem));
    const lines = issues.map(formatProblem);
    super(`${file}: invalid configuration:\n  ${lines.join('\n  ')}`);
    this.issues = issues;
    this.problems = lines;
    this.name = 'ConfigError';
  }
}

/** Where a path of the document is in its text, and the path written out (`machines[2].name`). */
interface Where {
  (issuePath: readonly PropertyKey[]): Pick<ConfigProblem, 'line' | 'column' | 'path'>;
  /** The key `key` of the map at `issuePath` (an unknown key): its own line, not its map's. */
  key(issuePath: readonly PropertyKey[], key: string): Pick<ConfigProblem, 'line' | 'column' | 'path'>;
}

const dotted = (issuePath: readonly PropertyKey[]) =>
  issuePath.reduce<string>((text, part) => (typeof part === 'number' ? `${text}[${part}]` : text ? `${text}.${String(part)}` : String(part)), '');

/** The text parsed with `yaml`, which keeps every node's place in it (and goes on past a syntax error). */
interface YamlSource {
  document: Yaml.Document.Parsed;
  where: Where;
  /** The YAML errors (syntax, duplicate keys), located. */
  errors: ConfigProblem[];
}

/**
 * Parses the text with `yaml` for its source ranges. `yaml` is loaded only here, when a config is
 * wrong or checked (`paddock config check`): a start with a good config does without it.
 */
function yamlSource(text: string): YamlSource {
  const { parseDocument, LineCounter, isNode, isMap, isScalar } = createRequire(import.meta.url)('yaml') as typeof Yaml;
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, merge: true });
  const position = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const parts = (issuePath: readonly PropertyKey[]) => issuePath.map((part) => (typeof part === 'symbol' ? String(part) : part));
  // A path the document lacks (a required key left out) is shown at the nearest node it has.
  const nodeAt = (issuePath: readonly PropertyKey[]) => {
    for (let length = issuePath.length; length >= 0; length--) {
      const node = length === 0 ? document.contents : document.getIn(parts(issuePath.slice(0, length)), true);
      if (isNode(node) && node.range) return node;
    }
    return undefined;
  };
  const where: Where = Object.assign(
    (issuePath: readonly PropertyKey[]) => {
      const node = nodeAt(issuePath);
      return { ...(node?.range ? position(node.range[0]) : {}), path: dotted(issuePath) };
    },
    {
      key: (issuePath: readonly PropertyKey[], key: string) => {
        const map = nodeAt(issuePath);
        const pair = isMap(map) ? map.items.find((item) => isScalar(item.key) && String(item.key.value) === key) : undefined;
        const node = pair && isScalar(pair.key) && pair.key.range ? pair.key : map;
        return { ...(node?.range ? position(node.range[0]) : {}), path: dotted([...issuePath, key]) };
      },
    },
  );
  const errors = document.errors.map((error) => ({
    ...(error.linePos ? { line: error.linePos[0].line, column: error.linePos[0].col } : {}),
    path: '',
    // yaml's message repeats the place and quotes the text after its first line.
    message: `YAML: ${error.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`,
  }));
  return { document, where, errors };
}

/** Problems by line, then column; those without a place last. */
function inTextOrder(problems: ConfigProblem[]): ConfigProblem[] {
  const key = (problem: ConfigProblem) => (problem.line ?? Infinity) * 1e6 + (problem.column ?? 0);
  return problems
    .map((problem, index) => ({ problem, index }))
    .sort((a, b) => key(a.problem) - key(b.problem) || a.index - b.index)
    .map(({ problem }) => problem);
}

/** Reads and validates a config file; a relative dataDir or key path is taken from the file's folder. */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(file, [`cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`]);
  }
  const config = parseConfig(text, file);
  const folder = path.dirname(path.resolve(file));
  const local = (value: string) => (value.startsWith('~/') || path.isAbsolute(value) ? value : path.resolve(folder, value));
  for (const machine of config.machines) {
    const settings = machine.settings as Record<string, unknown>;
    for (const key of getKind(machine.kind).pathSettings ?? []) {
      if (typeof settings[key] === 'string') settings[key] = local(settings[key] as string);
    }
  }
  return { ...config, dataDir: path.resolve(folder, config.dataDir) };
}

export function parseConfig(text: string, file = '<config>'): Config {
  // js-yaml reads a 10,000-machine inventory in a fraction of the time and memory `yaml` takes;
  // `yaml` is used only when something is wrong, to point at the line.
  let raw: unknown;
  try {
    raw = loadYaml(text) ?? {};
  } catch (error) {
    // Every problem of the file, as `paddock config check` reports them; js-yaml's own if `yaml` finds none.
    const problems = checkConfigText(text);
    const mark = (error as YAMLException).mark;
    throw new ConfigError(
      file,
      problems.length > 0
        ? problems
        : [
            {
              ...(mark ? { line: mark.line + 1, column: mark.column + 1 } : {}),
              path: '',
              message: `YAML: ${(error as YAMLException).reason ?? (error as Error).message}`,
            },
          ],
    );
  }
  let source: YamlSource | undefined;
  const where: Where = Object.assign((issuePath: readonly PropertyKey[]) => (source ??= yamlSource(text)).where(issuePath), {
    key: (issuePath: readonly PropertyKey[], key: string) => (source ??= yamlSource(text)).where.key(issuePath, key),
  });
  const { config, problems } = validate(raw, where);
  if (!config) throw new ConfigError(file, inTextOrder(problems));
  return config;
}

/**
 * Every problem of a config text in one pass, each with its line and column: YAML errors (the rest
 * of the document is still checked as `yaml` recovered it), then what the schema, the kinds and
 * the rules between machines refuse. Empty when the config is good. Nothing is contacted (an
 * OpenStack pool's cloud is asked only when the server starts).
 */
export function checkConfigText(text: string): ConfigProblem[] {
  const source = yamlSource(text);
  const problems = [...source.errors];
  let raw: unknown;
  try {
    raw = source.document.toJS() ?? {};
  } catch (error) {
    return inTextOrder([...problems, { path: '', message: `YAML: ${(error as Error).message}` }]);
  }
  problems.push(...validate(raw, source.where).problems);
  return inTextOrder(problems);
}

/** checkConfigText for a file; one that cannot be read is one problem without a line. */
export function checkConfigFile(file: string): ConfigProblem[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    return [{ path: '', message: `cannot read: ${(error as NodeJS.ErrnoException).code ?? String(error)}` }];
  }
  return checkConfigText(text);
}

/** The top level, each machine left to be checked on its own (so one bad machine hides no other problem). */
const documentSchema = configSchema.extend({ machines: z.array(z.unknown()).default([]) });

/**
 * Checks a document's value: the top level and each machine against the schema, then each machine
 * against its kind and the others. Returns the config, or every problem found.
 */
function validate(raw: unknown, where: Where): { config?: Config; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = [];
  const problem = (issuePath: readonly PropertyKey[], message: string) => problems.push({ ...where(issuePath), message });
  const schemaIssues = (issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[]) => {
    for (const issue of issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) problems.push({ ...where.key([...prefix, ...issue.path], key), message: `unknown key ${JSON.stringify(key)}` });
      } else if (issue.code === 'invalid_type' && / received undefined$/.test(issue.message)) {
        problem([...prefix, ...issue.path], `missing: a required key (${issue.expected})`);
      } else problem([...prefix, ...issue.path], issue.message);
    }
  };
  const top = documentSchema.safeParse(raw);
  if (!top.success) schemaIssues(top.error.issues, []);
  const rawObject = raw !== null && typeof raw === 'object' ? (raw as Record<string, unknown>) : {};
  // With the top level refused, machines are still checked, with the defaults for what they take from it.
  const agentName = top.success ? top.data.agent.name : 'local';
  const labHosts = top.success ? top.data.labHosts : {};
  const entries = top.success ? top.data.machines : Array.isArray(rawObject.machines) ? (rawObject.machines as unknown[]) : [];
  const machines: { index: number; machine: MachineConfig }[] = [];
  const names = new Map<string, number>();
  entries.forEach((entry, index) => {
    const name = (entry as { name?: unknown } | null)?.name;
    if (typeof name === 'string') {
      if (names.has(name)) problem(['machines', index, 'name'], `duplicate machine name ${name} (machines[${names.get(name)}] has it)`);
      else names.set(name, index);
    }
    const parsed = machineSchema.safeParse(entry);
    if (!parsed.success) return schemaIssues(parsed.error.issues, ['machines', index]);
    const labHost = parsed.data.labHost ?? agentName;
    machines.push({ index, machine: { ...parsed.data, labHost, access: parsed.data.access ?? labHosts[labHost]?.access ?? 'direct' } });
  });
  const identities = new Map<string, string>();
  for (const { index, machine } of machines) {
    const at = (issuePath: readonly PropertyKey[], message: string) => problem(['machines', index, ...issuePath], message);
    let kind;
    try {
      kind = getKind(machine.kind);
    } catch (error) {
      at(['kind'], (error as Error).message);
      continue;
    }
    if (machine.labels.kind !== undefined && machine.labels.kind !== machine.kind) at(['labels', 'kind'], `the kind label is set from kind (${machine.kind})`);
    if (kind.pool && machine.count !== undefined) at(['count'], `a pool of kind ${machine.kind} is sized by its settings (maxInstances), not count`);
    for (const [map, what] of [
      ['labels', 'label'],
      ['capacities', 'capacity'],
    ] as const) {
      if (Object.hasOwn(machine[map], 'health')) at([map, 'health'], `health is reserved: the machine's health score (a ${what} of that name cannot be set)`);
    }
    machine.labels.kind = machine.kind;
    machine.labels = { ...kind.defaults?.labels, ...machine.labels };
    machine.capacities = { ...kind.defaults?.capacities, ...machine.capacities };
    const settings = kind.settingsSchema.safeParse(machine.settings ?? {});
    if (!settings.success) schemaIssues(settings.error.issues, ['machines', index, 'settings']);
    else {
      machine.settings = settings.data;
      identityProblems(kind, machine, identities, at);
    }
    warmProblems(machine, kind, settings.success, at);
  }
  if (top.success && top.data.lease.default > top.data.lease.max) problem(['lease', 'default'], 'longer than lease.max');
  if (!top.success || problems.length > 0) return { problems };
  const expanded = expandPools(machines.map(({ machine }) => machine));
  if (typeof expanded === 'string') {
    problem(['machines'], expanded);
    return { problems };
  }
  return { config: { ...top.data, machines: expanded }, problems };
}

/**
 * A kind whose machines stand for something outside (a static host's login) has one machine per
 * identity: `count` would copy it, and two entries with one identity would share it.
 */
function identityProblems(
  kind: KindDescriptor,
  machine: MachineConfig,
  identities: Map<string, string>,
  problem: (issuePath: readonly PropertyKey[], message: string) => void,
): void {
  if (!kind.identities) return;
  const own = kind.identities(machine.settings);
  if (machine.count !== undefined) {
    problem(['count'], `a ${machine.kind} machine is one ${own[0]}; count would give it to ${machine.count} reservations at once`);
  }
  for (const identity of own) {
    const first = identities.get(identity);
    if (first !== undefined) problem(['settings'], `${machine.name} is ${identity}, the same as ${first}; one account cannot be two machines`);
    else identities.set(identity, machine.name);
  }
}

/**
 * `warm` is for kinds that say so (QEMU slots, boards with SSH, OpenStack pools that are `ready:
 * ssh`: their machines are handed over with the reservation's key swapped in over SSH), and keeps
 * no more machines warm than the entry has (an OpenStack pool: maxInstances).
 */
function warmProblems(
  machine: MachineConfig,
  kind: KindDescriptor,
  settingsValid: boolean,
  problem: (issuePath: readonly PropertyKey[], message: string) => void,
): void {
  if (machine.warm === undefined) return;
  if (!kind.warm) return problem(['warm'], `warm machines are kept for QEMU slots, boards and OpenStack pools only, not for kind ${machine.kind}`);
  const why = settingsValid ? kind.warm(machine.settings) : undefined;
  if (why !== undefined) return problem(['warm'], why);
  const cloud = machine.kind === 'openstack' ? (machine.settings as { maxInstances?: number } | undefined) : undefined;
  const images = new Set<string>();
  for (const [index, entry] of machine.warm.entries()) {
    if (images.has(entry.image)) problem(['warm', index, 'image'], `${entry.image} is warm twice in one entry`);
    images.add(entry.image);
  }
  const slots = cloud?.maxInstances ?? machine.count ?? 1;
  const total = machine.warm.reduce((sum, entry) => sum + entry.count, 0);
  if (total > slots) problem(['warm'], `${total} warm machines asked of an entry of ${slots} slot${slots === 1 ? '' : 's'}`);
}

/**
 * A machine with `count: N` becomes N machines NAME-1 … NAME-N with the same labels and settings;
 * `warm` names the entry. The problem, when the names made collide.
 */
function expandPools(machines: MachineConfig[]): MachineConfig[] | string {
  for (const machine of machines) if (machine.warm !== undefined) machine.warmPool = machine.name;
  if (machines.every((machine) => machine.count === undefined)) return machines;
  const expanded: MachineConfig[] = [];
  for (const { count, ...machine } of machines) {
    if (count === undefined) expanded.push(machine);
    else for (let index = 1; index <= count; index++) expanded.push({ ...structuredClone(machine), name: `${machine.name}-${index}` });
  }
  const names = new Set<string>();
  for (const machine of expanded) {
    if (names.has(machine.name)) return `the pool names make machine ${machine.name} twice`;
    names.add(machine.name);
  }
  return expanded;
}

/** A PostgreSQL URL as the database setting takes it (`paddock serve --database`); a ConfigError otherwise. */
export function parseDatabase(value: string): string {
  const parsed = databaseSchema.safeParse(value);
  if (!parsed.success) throw new ConfigError('--database', [parsed.error.issues[0]?.message ?? 'not a PostgreSQL URL']);
  return parsed.data;
}

/** `host:port` (or `[v6]:port`) as the listen setting takes it; a ConfigError otherwise. */
export function parseListen(value: string): Config['listen'] {
  const parsed = listenSchema.safeParse(value);
  if (!parsed.success) throw new ConfigError('--listen', [parsed.error.issues[0]?.message ?? 'not host:port']);
  return parsed.data;
}
