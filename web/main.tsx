// The dashboard: sign in with a token, then machines, the queue, reservations (with their live
// timeline and console), jobs and runs, images. Pages are chosen by the URL's fragment (#/machines),
// which never holds the token. Everything shown from the API is rendered as text by preact.
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { Caller } from '../protocol/api.js';
import { api, describe, session } from './api.js';
import { Images } from './pages/images.js';
import { Jobs, RunPage } from './pages/jobs.js';
import { Machines } from './pages/machines.js';
import { Queue } from './pages/queue.js';
import { ConsolePage } from './pages/console.js';
import { ReservationPage, Reservations } from './pages/reservations.js';
import { Report } from './ui.js';

// xterm.js makes <style> elements while it runs; the page's Content-Security-Policy admits styles
// from files and those carrying this answer's nonce only, so they get the nonce.
const nonce = document.querySelector<HTMLScriptElement>('script[nonce]')?.nonce;
if (nonce) {
  const create = document.createElement.bind(document);
  document.createElement = ((name: string, options?: ElementCreationOptions) => {
    const element = create(name, options);
    if (name.toLowerCase() === 'style') element.nonce = nonce;
    return element;
  }) as typeof document.createElement;
}

const tabs = [
  ['machines', 'Machines'],
  ['queue', 'Queue'],
  ['reservations', 'Reservations'],
  ['jobs', 'Jobs'],
  ['images', 'Images'],
] as const;

function useRoute(): string[] {
  const read = () => location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}

function SignIn({ signedIn }: { signedIn: (caller: Caller) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string>();
  const submit = (event: Event) => {
    event.preventDefault();
    const value = token.trim();
    api.whoami(value).then(
      (caller) => {
        session.save(value);
        setToken('');
        signedIn(caller);
      },
      (failure: unknown) => setError(describe(failure)),
    );
  };
  return (
    <form class="signin" onSubmit={submit}>
      <h1>Paddock</h1>
      <label>
        Token
        <input type="password" name="token" autocomplete="off" value={token} onInput={(event) => setToken(event.currentTarget.value)} />
      </label>
      <p class="muted">Kept in this tab only, until you sign out or close the browser.</p>
      <button type="submit">Sign in</button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

function Page({ route, caller }: { route: string[]; caller: Caller }) {
  const [page, id, machine] = route;
  if (page === 'queue') return <Queue caller={caller} />;
  if (page === 'reservations' && id) return <ReservationPage id={id} caller={caller} />;
  if (page === 'reservations') return <Reservations caller={caller} />;
  if (page === 'console' && id && machine) return <ConsolePage id={id} machine={machine} caller={caller} />;
  if (page === 'jobs') return <Jobs caller={caller} />;
  if (page === 'runs' && id) return <RunPage id={id} />;
  if (page === 'images') return <Images />;
  return <Machines caller={caller} />;
}

function App() {
  const [caller, setCaller] = useState<Caller | null | undefined>(session.token() ? undefined : null);
  const [notice, setNotice] = useState<string>();
  const route = useRoute();
  useEffect(() => {
    if (caller !== undefined) return;
    api.whoami(session.token() ?? '').then(setCaller, () => {
      session.clear();
      setCaller(null);
    });
  }, [caller]);
  useEffect(() => setNotice(undefined), [route.join('/')]);
  if (caller === undefined) return <p class="muted">Loading…</p>;
  if (caller === null) return <SignIn signedIn={setCaller} />;
  const signOut = () => {
    session.clear();
    sessionStorage.clear();
    setCaller(null);
    location.hash = '';
  };
  const current = route[0] === 'console' ? 'reservations' : route[0] === 'runs' ? 'jobs' : route[0] || 'machines';
  return (
    <Report.Provider value={(message) => setNotice(typeof message === 'string' ? message : describe(message))}>
      <header>
        <strong class="brand">Paddock</strong>
        <nav>
          {tabs.map(([name, label]) => (
            <a key={name} href={`#/${name}`} class={current === name ? 'current' : ''}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          {caller.name} ({caller.role})
        </span>
        <button type="button" onClick={signOut}>
          Sign out
        </button>
      </header>
      {notice && (
        <p class="notice" role="alert">
          {notice}{' '}
          <button type="button" class="link" onClick={() => setNotice(undefined)}>
            dismiss
          </button>
        </p>
      )}
      <main>
        <Page route={route} caller={caller} />
      </main>
    </Report.Provider>
  );
}

render(<App />, document.getElementById('app')!);
