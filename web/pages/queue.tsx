// The queue: waiting requests by position, each with why it waits (explain.tsx) and a cancel.
import type { Caller, ReservationView } from '../../protocol/api.js';
import { api, relative } from '../api.js';
import { Explain } from './explain.js';
import { Loading, usePoll } from '../ui.js';
import { EndAction } from './reservations.js';

export function Queue({ caller }: { caller: Caller }) {
  const list = usePoll(() => api.get<ReservationView[]>(caller.role === 'admin' ? '/v1/reservations?all=1' : '/v1/reservations'), 3000);
  if (!list.data) return <Loading error={list.error} />;
  const queued = list.data.filter((reservation) => reservation.state === 'queued').sort((a, b) => (a.queuePosition ?? 0) - (b.queuePosition ?? 0));
  return (
    <section>
      <h2>Queue</h2>
      {queued.length === 0 && <p class="muted">Nothing waits{caller.role === 'admin' ? '' : ' (of yours)'}.</p>}
      {queued.map((reservation) => (
        <article key={reservation.id} class="queued" data-reservation={reservation.id}>
          <h3>
            <span class="position">#{reservation.queuePosition}</span> <a href={`#/reservations/${encodeURIComponent(reservation.id)}`}>{reservation.id}</a>{' '}
            <span class="muted">
              {reservation.owner}, waiting since {relative(reservation.createdAt)}, gives up {relative(reservation.queueDeadline)}
            </span>{' '}
            <EndAction reservation={reservation} done={list.reload} />
          </h3>
          <Explain id={reservation.id} />
        </article>
      ))}
    </section>
  );
}
