// A lab host's agent played over HTTP with an agent token (lab-a, static machines), for tests that
// need exact outcomes: each provisioning ends with the stages and the result the test reports.
import type { AgentTask, ReservationView } from '../../protocol/api.js';
import type { JsonClient, TestApi } from './api.js';

/** What the played agent reports for one provisioning: its stages, then ready or a failure. */
export type Outcome = { stages: ('addressKnown' | 'sshReady')[] } & (
  { kind: 'ready' } | { kind: 'failed'; fault: 'infrastructure' | 'request'; code: string; stage?: 'sshReady' }
);

export interface Lab {
  api: TestApi;
  admin: JsonClient;
  user: JsonClient;
  agent: JsonClient;
}

export async function lab(api: TestApi): Promise<Lab> {
  const admin = api.http();
  const tokenOf = async (name: string, role: string) => ((await admin.post('v1/tokens', { json: { name, role } })).body as { token: string }).token;
  return { api, admin, user: api.http(await tokenOf('erin', 'user')), agent: api.http(await tokenOf('lab-a', 'agent')) };
}

/** Two static machines of lab-a (m1 slot=a, m2 slot=b) that no embedded agent serves: the test plays lab-a. */
export const playedLabMachines = `
agent: { enabled: false }
agents: { heartbeatTimeout: 1d }
machines:
  - { name: m1, kind: static, labHost: lab-a, labels: { type: box, slot: a }, settings: { address: 127.0.9.1, user: ci, adminKey: /nonexistent } }
  - { name: m2, kind: static, labHost: lab-a, labels: { type: box, slot: b }, settings: { address: 127.0.9.2, user: ci, adminKey: /nonexistent } }
`;

/** The agent's tasks for one reservation, claimed until they come (a minute at most). */
async function tasksOf({ agent }: Lab, reservationId: string, action: AgentTask['action']): Promise<AgentTask[]> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const claimed = await agent.post('v1/agent/claim', { json: { agent: 'lab-a', kinds: ['static'], wait: 1 } });
    const tasks = (claimed.body as { tasks: AgentTask[] }).tasks.filter((task) => task.reservationId === reservationId && task.action === action);
    if (tasks.length > 0) return tasks;
  }
  throw new Error(`no ${action} task for ${reservationId} within a minute`);
}

const report = (lab: Lab, task: AgentTask, body: object) => lab.agent.post(`v1/agent/tasks/${task.id}/report`, { json: { agent: 'lab-a', report: body } });

/** The user reserves by spec, the agent reports the outcome; a failed reservation is released by the agent too. */
export async function provision(lab: Lab, spec: string, outcome: Outcome, image?: string): Promise<ReservationView> {
  const created = (await lab.user.post('v1/reservations', { json: { members: [{ role: 'main', spec, ...(image ? { image } : {}) }] } }))
    .body as ReservationView;
  const [task] = await tasksOf(lab, created.id, 'provision');
  for (const stage of outcome.stages) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    await report(lab, task, { kind: 'stage', stage });
  }
  const { stages: _stages, ...last } = outcome;
  const ended = await report(
    lab,
    task,
    last.kind === 'ready' ? { kind: 'ready', host: '127.0.9.1', port: 22, user: 'ci' } : { ...last, reason: `${last.code} here` },
  );
  if (ended.statusCode !== 204) throw new Error(JSON.stringify(ended.body));
  if (last.kind === 'failed') await finishRelease(lab, created.id);
  return (await lab.user.get(`v1/reservations/${created.id}`)).body as ReservationView;
}

export async function finishRelease(lab: Lab, id: string): Promise<void> {
  for (const task of await tasksOf(lab, id, 'release')) await report(lab, task, { kind: 'released' });
}

export async function release(lab: Lab, id: string): Promise<void> {
  await lab.user.delete(`v1/reservations/${id}`);
  await finishRelease(lab, id);
}
