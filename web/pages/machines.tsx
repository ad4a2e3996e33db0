// Machines: state, health, lab host, who holds each, and why one is out of service; maintenance and
// activate (the API refuses them to anyone but an admin, and the refusal is shown).
import type { Caller, MachineView, ReservationView } from '../../protocol/api.js';
import { api } from '../api.js';
import { Action, Badge, Columns, Loading, usePoll } from '../ui.js';

const path = (name: string, action: string) => `/v1/machines/${encodeURIComponent(name)}/${action}`;

function why(machine: MachineView): string {
  if (machine.unreachable) return `unreachable: ${machine.unreachable.reason}`;
  return machine.reason ?? '';
}

export function Machines({ caller }: { caller: Caller }) {
  const machines = usePoll(() => api.get<MachineView[]>('/v1/machines'), 3000);
  const reservations = usePoll(() => api.get<ReservationView[]>(caller.role === 'admin' ? '/v1/reservations?all=1' : '/v1/reservations'), 3000);
  if (!machines.data) return <Loading error={machines.error} />;
  const owners = new Map((reservations.data ?? []).map((reservation) => [reservation.id, reservation.owner]));
  const act = (name: string, action: string) => () =>
    api.post(path(name, action), action === 'maintenance' ? { reason: `set from the dashboard by ${caller.name}` } : {}).then(machines.reload);
  return (
    <section>
      <h2>Machines</h2>
      <table>
        <Columns names={['Name', 'Kind', 'State', 'Health', 'Lab host', 'Held by', 'Why', '']} />
        <tbody>
          {machines.data.map((machine) => (
            <tr key={machine.name} data-machine={machine.name}>
              <td>{machine.name}</td>
              <td>{machine.kind}</td>
              <td>
                <Badge state={machine.state} />
              </td>
              <td class={machine.health < 0.9 ? 'warn' : ''}>{Math.round(machine.health * 100)}%</td>
              <td>{machine.labHost}</td>
              <td>
                {machine.reservationId &&
                  reservations.data &&
                  (owners.has(machine.reservationId) ? (
                    <a href={`#/reservations/${encodeURIComponent(machine.reservationId)}`}>{owners.get(machine.reservationId)}</a>
                  ) : (
                    <span class="muted">another user</span>
                  ))}
              </td>
              <td class="why">{why(machine)}</td>
              <td class="actions">
                {machine.state === 'maintenance' || machine.state === 'quarantined' ? (
                  <Action label="Activate" run={act(machine.name, 'activate')} title="admins only" />
                ) : machine.state !== 'retired' ? (
                  <Action label="Maintenance" run={act(machine.name, 'maintenance')} title="admins only" />
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
