// Why a queued request waits, per member (the API's explain): what matches, which of those are
// busy and why, what the other machines lack, and members waiting for another machine.
import type { ReservationExplainView } from '../../protocol/api.js';
import { api, relative } from '../api.js';
import { Loading, usePoll } from '../ui.js';

export function Explain({ id }: { id: string }) {
  const explain = usePoll(() => api.get<ReservationExplainView>(`/v1/reservations/${encodeURIComponent(id)}/explain`), 5000, [id]);
  if (!explain.data) return <Loading error={explain.error} />;
  return (
    <ul class="explain">
      {explain.data.members.map((member) => (
        <li key={member.role}>
          <strong>
            {member.role}
            {member.count > 1 ? ` ×${member.count}` : ''}
          </strong>{' '}
          <code>{member.spec}</code>: {member.matches.length} match, {member.available.length} free now
          {member.unavailable.length > 0 && (
            <ul>
              {member.unavailable.map((machine) => (
                <li key={machine.machine}>
                  {machine.machine}: {machine.reason}
                </li>
              ))}
            </ul>
          )}
          {member.matches.length === 0 && member.rejected.length > 0 && (
            <ul>
              {member.rejected.slice(0, 5).map((rejected) => (
                <li key={rejected.machine}>
                  {rejected.machine} fails {rejected.term}: {rejected.reason}
                </li>
              ))}
            </ul>
          )}
          {member.waiting?.map((waiting) => (
            <div key={waiting.index} class="why">
              {member.role}.{waiting.index} failed ({waiting.code}) on {waiting.failedOn.join(', ')}; waits for another until {relative(waiting.waitingUntil)}
            </div>
          ))}
        </li>
      ))}
    </ul>
  );
}
