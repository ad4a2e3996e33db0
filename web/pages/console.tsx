// A machine's console in a terminal (xterm.js): what it printed so far, then the console stream live.
// The owner of a board types at it (one writer at a time; "Take over" demotes the other writer); a
// VM's console is its log and can only be watched, as can another user's console for an admin.
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Caller, ReservationView } from '../../protocol/api.js';
import { api, ApiError, consoleSocket, follow } from '../api.js';
import { Loading, usePoll } from '../ui.js';

interface Status {
  mode: 'connecting' | 'read' | 'write' | 'closed';
  reason: string;
}

function Screen({ id, machine, typing }: { id: string; machine: string; typing: boolean }) {
  const element = useRef<HTMLDivElement>(null);
  const socketRef = useRef<WebSocket>();
  const [status, setStatus] = useState<Status>({ mode: 'connecting', reason: 'opening the console' });
  const [note, setNote] = useState<string>();
  useEffect(() => {
    const terminal = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 13, scrollback: 5000 });
    const fit = new FitAddon();
    terminal.loadAddon(fit);
    terminal.open(element.current!);
    fit.fit();
    const resized = () => fit.fit();
    addEventListener('resize', resized);
    const abort = new AbortController();
    let mode: Status['mode'] = 'connecting';
    const set = (next: Status) => {
      mode = next.mode;
      setStatus(next);
      if (next.mode === 'write') setNote(undefined);
    };
    // What the console printed before the stream opens, then the stream from there on.
    const query = new URLSearchParams({ machine });
    void follow(`/v1/reservations/${encodeURIComponent(id)}/console?${query}`, (text) => terminal.write(text), abort.signal)
      .catch((error: unknown) => {
        if (!(error instanceof ApiError && error.status === 404) && !abort.signal.aborted)
          setNote(`the log so far could not be read: ${(error as Error).message}`);
      })
      .finally(() => {
        if (abort.signal.aborted) return;
        const socket = consoleSocket(id, machine, typing);
        socketRef.current = socket;
        socket.onmessage = (message: MessageEvent<ArrayBuffer | string>) => {
          if (typeof message.data !== 'string') return terminal.write(new Uint8Array(message.data));
          const parsed = JSON.parse(message.data) as { type: string; mode?: 'read' | 'write'; reason?: string; message?: string };
          if (parsed.type === 'mode' && parsed.mode) set({ mode: parsed.mode, reason: parsed.reason ?? '' });
          else if (parsed.type === 'error') setNote(parsed.message);
        };
        socket.onclose = (event) =>
          set({
            mode: 'closed',
            reason:
              event.code === 1000 ? event.reason || 'the console closed' : 'the console stream could not be opened or broke (not ready, ended, or not yours)',
          });
      });
    // onData carries keys and the terminal's own answers (to a size query, say); only keys are the user's.
    const typed = terminal.onData((data) => {
      const socket = socketRef.current;
      if (mode === 'write' && socket?.readyState === WebSocket.OPEN) socket.send(new TextEncoder().encode(data));
    });
    const keys = terminal.onKey(() => {
      if (mode !== 'write') setNote(mode === 'closed' ? 'the console is closed' : 'this console is watched only: what you type is not sent');
    });
    terminal.focus();
    return () => {
      abort.abort();
      typed.dispose();
      keys.dispose();
      socketRef.current?.close();
      removeEventListener('resize', resized);
      terminal.dispose();
    };
  }, [id, machine, typing]);
  const takeover = () => socketRef.current?.send(JSON.stringify({ type: 'takeover' }));
  return (
    <div>
      <p class="console-status">
        <span class={`badge mode-${status.mode}`} data-mode={status.mode}>
          {status.mode === 'write' ? 'you type' : status.mode === 'read' ? 'watching' : status.mode}
        </span>{' '}
        {status.reason}{' '}
        {typing && status.mode === 'read' && (
          <button type="button" onClick={takeover}>
            Take over
          </button>
        )}
      </p>
      {note && (
        <p class="notice" role="status">
          {note}
        </p>
      )}
      <div class="terminal" ref={element} />
    </div>
  );
}

export function ConsolePage({ id, machine, caller }: { id: string; machine: string; caller: Caller }) {
  const reservation = usePoll(() => api.get<ReservationView>(`/v1/reservations/${encodeURIComponent(id)}`), 10_000, [id]);
  const view = reservation.data;
  if (!view) return <Loading error={reservation.error} />;
  const allocation = view.allocations.find((each) => each.machine === machine);
  // A board's console has a relay its owner types through; a VM's is a log to watch.
  const typing = view.owner === caller.name && allocation?.console !== undefined;
  return (
    <section>
      <h2>
        Console of {machine} <span class="muted">· </span>
        <a href={`#/reservations/${encodeURIComponent(id)}`}>{id}</a>
      </h2>
      {allocation ? <Screen id={id} machine={machine} typing={typing} /> : <p class="error">{machine} is not one of this reservation's machines.</p>}
    </section>
  );
}
