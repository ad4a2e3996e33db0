// Reservations: the list (yours; an admin sees everyone's), and one reservation with each machine's
// stage timeline and its events, live from the event stream; cancel (queued), release, consoles.
import { useEffect, useState } from 'preact/hooks';
import { endStates, stages, type Caller, type EventView, type ReservationView } from '../../protocol/api.js';
import { api, events, relative } from '../api.js';
import { Action, Badge, Columns, Loading, usePoll } from '../ui.js';
import { Explain } from './explain.js';

const reservationPath = (id: string) => `/v1/reservations/${encodeURIComponent(id)}`;
const isEnded = (reservation: ReservationView) => endStates.includes(reservation.state);

/** Cancel while queued, release once granted; nothing once ended. */
export function EndAction({ reservation, done }: { reservation: ReservationView; done: () => void }) {
  if (isEnded(reservation) || reservation.state === 'releasing') return null;
  const queued = reservation.state === 'queued';
  return <Action label={queued ? 'Cancel' : 'Release'} danger run={() => api.delete(reservationPath(reservation.id)).then(done)} />;
}

const members = (reservation: ReservationView) =>
  reservation.members
    .map((member) => `${member.role}${member.count > 1 ? `×${member.count}` : ''}: ${member.spec}${member.image ? ` (${member.image})` : ''}`)
    .join('; ');

export function Reservations({ caller }: { caller: Caller }) {
  const [ended, setEnded] = useState(false);
  const query = new URLSearchParams({ ...(caller.role === 'admin' ? { all: '1' } : {}), ...(ended ? { ended: '1', limit: '50' } : {}) });
  const list = usePoll(() => api.get<ReservationView[]>(`/v1/reservations?${query}`), 2000, [ended]);
  return (
    <section>
      <h2>Reservations</h2>
      <label class="toggle">
        <input type="checkbox" checked={ended} onChange={(event) => setEnded(event.currentTarget.checked)} /> show ended ones
      </label>
      {!list.data ? (
        <Loading error={list.error} />
      ) : list.data.length === 0 ? (
        <p class="muted">No reservations. paddock reserve SPEC --image IMAGE makes one.</p>
      ) : (
        <table>
          <Columns names={['Reservation', 'Owner', 'State', 'Members', 'Machines', 'Lease ends', '']} />
          <tbody>
            {list.data.map((reservation) => (
              <tr key={reservation.id} data-reservation={reservation.id}>
                <td>
                  <a href={`#/reservations/${encodeURIComponent(reservation.id)}`}>{reservation.id}</a>
                </td>
                <td>{reservation.owner}</td>
                <td>
                  <Badge state={reservation.state} />
                  {reservation.queuePosition !== undefined && <span class="muted"> #{reservation.queuePosition}</span>}
                </td>
                <td>{members(reservation)}</td>
                <td>{reservation.allocations.map((allocation) => allocation.machine || '…').join(', ')}</td>
                <td>{relative(reservation.expiresAt)}</td>
                <td class="actions">
                  <EndAction reservation={reservation} done={list.reload} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Timeline({ reservation }: { reservation: ReservationView }) {
  const started = new Date(reservation.grantedAt ?? reservation.createdAt).getTime();
  return (
    <table class="timeline">
      <thead>
        <tr>
          <th>Member</th>
          <th>Machine</th>
          <th>State</th>
          {stages.map((stage) => (
            <th key={stage}>{stage}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {reservation.allocations.map((allocation) => (
          <tr key={allocation.id} data-allocation={`${allocation.role}.${allocation.index}`}>
            <td>
              {allocation.role}.{allocation.index}
            </td>
            <td>{allocation.machine || '—'}</td>
            <td>
              <Badge state={allocation.state} />
              {allocation.failure && (
                <div class="why">
                  {allocation.failure.code}: {allocation.failure.reason}
                </div>
              )}
            </td>
            {stages.map((stage) => {
              const at = allocation.stages[stage];
              return (
                <td key={stage} class={at ? 'stage done' : 'stage'}>
                  {at ? `+${((new Date(at).getTime() - started) / 1000).toFixed(1)} s` : '·'}
                </td>
              );
            })}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function ReservationPage({ id, caller }: { id: string; caller: Caller }) {
  const reservation = usePoll(() => api.get<ReservationView>(reservationPath(id)), 5000, [id]);
  const [log, setLog] = useState<EventView[]>([]);
  const [streaming, setStreaming] = useState(false);
  const reload = reservation.reload;
  useEffect(() => {
    // One stream for the page: what happened so far, then every event until the reservation ends.
    const abort = new AbortController();
    setLog([]);
    setStreaming(true);
    events<EventView>(
      `${reservationPath(id)}/events`,
      (event) => {
        setLog((earlier) => [...earlier, event]);
        reload();
      },
      abort.signal,
    )
      .catch(() => undefined)
      .finally(() => !abort.signal.aborted && setStreaming(false));
    return () => abort.abort();
  }, [id, reload]);
  const view = reservation.data;
  if (!view) return <Loading error={reservation.error} />;
  const owner = view.owner === caller.name;
  return (
    <section>
      <h2>
        Reservation {view.id} <Badge state={view.state} />
      </h2>
      <p>
        {view.owner} · lease {Math.round(view.leaseSeconds / 60)} min, ends {relative(view.expiresAt)} · priority {view.priority}
        {view.reason && <span class="why"> · {view.reason}</span>} <EndAction reservation={view} done={reservation.reload} />
      </p>
      <h3>Timeline</h3>
      <Timeline reservation={view} />
      {!isEnded(view) && (
        <p class="consoles">
          {view.allocations
            .filter((allocation) => allocation.machine && (allocation.state === 'ready' || allocation.state === 'provisioning'))
            .map((allocation) => (
              <a key={allocation.id} class="button" href={`#/console/${encodeURIComponent(view.id)}/${encodeURIComponent(allocation.machine)}`}>
                Console of {allocation.machine}
                {owner && allocation.console ? '' : ' (watch)'}
              </a>
            ))}
        </p>
      )}
      {view.state === 'queued' && <Explain id={view.id} />}
      <h3>Events {streaming && <span class="live">live</span>}</h3>
      <ol class="events">
        {log.map((event) => (
          <li key={event.id}>
            <time>{new Date(event.at).toLocaleTimeString()}</time> <strong>{event.type}</strong> {event.from ? `${event.from} → ` : ''}
            {event.to}
            {event.machine && <span class="muted"> on {event.machine}</span>}
            {event.reason && <span class="why"> · {event.reason}</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}
