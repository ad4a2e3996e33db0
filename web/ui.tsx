// Small parts every page uses: polling a list, the report of a refused action, state badges.
import { createContext } from 'preact';
import { useCallback, useContext, useEffect, useState } from 'preact/hooks';
import { describe } from './api.js';

/** Shows a message above the page: an error from a refused action, or a note. */
export const Report = createContext<(message: unknown) => void>(() => undefined);

export function useReport(): (message: unknown) => void {
  return useContext(Report);
}

/** Calls `load` now and every `everyMs`, keeping the last answer; `reload` asks again at once. */
export function usePoll<T>(load: () => Promise<T>, everyMs: number, keys: unknown[] = []): { data?: T; error?: string; reload: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((value) => value + 1), []);
  useEffect(() => {
    let stopped = false;
    const once = () =>
      load().then(
        (value) => !stopped && (setData(value), setError(undefined)),
        (failure: unknown) => !stopped && setError(describe(failure)),
      );
    void once();
    const timer = setInterval(() => void once(), everyMs);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [tick, ...keys]);
  return { data, error, reload };
}

export function Badge({ state }: { state: string }) {
  return <span class={`badge state-${state.replace(/[^a-z]/g, '')}`}>{state}</span>;
}

/** A button whose action is an API call: it waits while the call runs and reports a refusal. */
export function Action({ label, run, danger, title }: { label: string; run: () => Promise<unknown>; danger?: boolean; title?: string }) {
  const report = useReport();
  const [busy, setBusy] = useState(false);
  const click = () => {
    setBusy(true);
    run()
      .catch(report)
      .finally(() => setBusy(false));
  };
  return (
    <button type="button" class={danger ? 'danger' : ''} disabled={busy} onClick={click} title={title}>
      {label}
    </button>
  );
}

export function Loading({ error }: { error?: string }) {
  return error ? <p class="error">{error}</p> : <p class="muted">Loading…</p>;
}

/** A table's header row. */
export function Columns({ names }: { names: string[] }) {
  return (
    <thead>
      <tr>
        {names.map((name, index) => (
          <th key={index}>{name}</th>
        ))}
      </tr>
    </thead>
  );
}
