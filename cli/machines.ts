// The health side of `paddock machines`: a machine's provisioning history as a table, and retiring
// a machine for good.
import type { Command } from 'commander';
import type { Paddock } from '../client/index.js';
import type { MachineView, ProvisioningView } from '../protocol/api.js';

const seconds = (value: number) => `${value.toFixed(1)}s`;

/** How a provisioning ended: `ready`, or `failed CODE at STAGE (fault)`, with `(not counted)` for a failure that is not the machine's. */
function outcome(provisioning: ProvisioningView): string {
  if (provisioning.outcome === 'ready') return 'ready';
  const at = provisioning.stage ? ` at ${provisioning.stage}` : '';
  return `failed ${provisioning.code ?? '-'}${at} (${provisioning.fault ?? '-'}${provisioning.counted ? '' : ', not counted'})`;
}

/** The machine's last provisionings, newest first, as table rows under a header; none without history. */
export function provisioningRows(machine: MachineView): string[][] {
  const provisionings = machine.provisionings ?? [];
  if (provisionings.length === 0) return [];
  return [
    ['ENDED', 'RESERVATION', 'OWNER', 'OUTCOME', 'TOTAL', 'STAGES'],
    ...provisionings.map((provisioning) => [
      provisioning.endedAt,
      provisioning.reservationId,
      `${provisioning.owner}${provisioning.qualification ? ' (qualification)' : ''}`,
      outcome(provisioning),
      seconds(provisioning.seconds),
      provisioning.stages.map((stage) => `${stage.stage} ${seconds(stage.seconds)}`).join(', ') || '-',
    ]),
  ];
}

/** The health line of `machines show`: the score (the qualification is shown with the machine's state). */
export function healthLines(machine: MachineView): string[] {
  const runs = machine.provisionings?.length ?? 0;
  return [`health: ${machine.health}${runs === 0 ? ' (no provisionings yet)' : ''}`];
}

export function addRetireCommand(machines: Command, client: () => Paddock, print: (value: unknown) => void): void {
  machines
    .command('retire')
    .description('retire a machine for good (admins): never handed out again, its history kept; a reserved one once released')
    .argument('<name>')
    .option('--reason <text>', 'why, kept with the machine')
    .action(async (name: string, options: { reason?: string }) => {
      const machine = await client().retire(name, options.reason);
      print(`${name}: ${machine.state === 'retired' ? 'retired' : `${machine.state}, retired once released`}`);
    });
}
