// The web dashboard in a real browser: Debian's chromium, headless, driven by playwright-core,
// against a real `paddock serve` with one real QEMU VM slot. One server, one VM boot and one browser
// for the whole file; the tests run in order on one page as a person would click through it:
// sign in, watch a reservation made with the CLI reach ready, its console, the queue and a cancel,
// a refused action, release, an admin's view, images and jobs, sign out. A screenshot of each page
// goes to test-artifacts/dashboard/.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'ava';
import { chromium, type Browser, type Page } from 'playwright-core';
import WebSocket from 'ws';
import { Paddock } from '../../client/index.js';
import type { MachineView, ReservationView } from '../../protocol/api.js';
import { jsonClient, startApi, testConfig, type TestApi } from '../helpers/api.js';
import { testImages } from '../helpers/images.js';
import { runPaddock, stopGracefully } from '../helpers/server.js';

const bin = path.resolve(import.meta.dirname, '../../bin/paddock.js');
const artifacts = path.resolve(import.meta.dirname, '../../test-artifacts/dashboard');
const slow = 300_000;
let api: TestApi;
let browser: Browser;
let page: Page;
let alice: { token: string; client: Paddock };
let bob: { token: string; client: Paddock };
let vm: string;
let scratch: string;
let runner: ChildProcess | undefined;
let reservationId: string;
/** What the page logged as errors (a refused script or style would show here). */
const pageErrors: string[] = [];

test.before(async () => {
  const images = await testImages();
  // A job repository in a scratch folder (a local root the API accepts) and a runner host for its runs.
  scratch = mkdtempSync(path.join(os.tmpdir(), 'paddock-dashboard-test-'));
  chmodSync(scratch, 0o711);
  const repo = path.join(scratch, 'jobs.git');
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  writeFileSync(path.join(repo, 'steps.sh'), '#!/bin/sh\necho "<i>step one</i>"\nsleep 3\necho step two\n', { mode: 0o755 });
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', 'add', 'steps.sh']);
  execFileSync('git', ['-C', repo, '-c', 'user.name=ci', '-c', 'user.email=ci@example.com', 'commit', '-q', '-m', 'steps']);
  api = await startApi(
    testConfig(
      `repositories: { localRoots: [${JSON.stringify(scratch)}] }\n` +
        'machines:\n  - { name: vm, kind: qemu, count: 1, labels: { arch: x86_64 }, capacities: { cpus: 1, ram: 256MiB } }\n',
    ),
  );
  const user = async (name: string) => {
    const token = ((await api.http().post('v1/tokens', { json: { name, role: 'user' } })).body as { token: string }).token;
    return { token, client: new Paddock({ url: api.url, token }) };
  };
  alice = await user('alice');
  bob = await user('bob');
  await alice.client.images.upload(images.initramfs, { name: 'tiny', tag: 'test', format: 'bundle', arch: 'x86_64' });
  vm = ((await api.http().get('v1/machines')).body as MachineView[])[0].name;
  const runnerToken = ((await api.http().post('v1/tokens', { json: { name: 'runner-1', role: 'runner' } })).body as { token: string }).token;
  runner = spawn(process.execPath, [bin, 'runner', '--work', path.join(scratch, 'work'), '--heartbeat', '0.5'], {
    env: { ...process.env, PADDOCK_URL: api.url, PADDOCK_TOKEN: runnerToken },
    stdio: 'ignore',
  });
  await alice.client.jobs.add({ name: 'steps', repository: repo, script: 'steps.sh' });
  mkdirSync(artifacts, { recursive: true });
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  page = await (await browser.newContext({ viewport: { width: 1366, height: 800 } })).newPage();
  page.setDefaultTimeout(30_000);
  page.on('console', (message) => message.type() === 'error' && pageErrors.push(message.text()));
  page.on('pageerror', (error) => pageErrors.push(error.message));
});

test.after.always(async () => {
  await browser?.close();
  await stopGracefully(runner);
  await api?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const shot = (name: string) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
/** The browser's storage as the page sees it (the function runs in the page: its globals are the browser's). */
interface BrowserGlobals {
  sessionStorage: Record<string, string>;
  localStorage: { length: number };
  document: { cookie: string };
  pwned?: number;
}
const storage = () =>
  page.evaluate(() => {
    const browser = globalThis as unknown as BrowserGlobals;
    return { session: { ...browser.sessionStorage }, local: browser.localStorage.length, cookie: browser.document.cookie };
  });

async function signIn(token: string): Promise<void> {
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
}

test.serial(
  'the page and its assets carry a strict policy; only built files are served; a bad token is refused readably; signing in keeps the token in the tab only',
  async (t) => {
    const response = await page.goto(`${api.url}/`);
    const headers = response!.headers();
    const policy = headers['content-security-policy'];
    t.regex(policy, /frame-ancestors 'none'/);
    t.regex(policy, /script-src 'self'(;|$)/);
    t.notRegex(policy, /unsafe-inline|unsafe-eval/);
    t.is(headers['x-content-type-options'], 'nosniff');
    const plain = jsonClient(api.url, undefined);
    for (const tricky of ['/assets/..%2f..%2fpackage.json', '/assets/../package.json', '/assets/%2e%2e%2fadmin-token', '/assets/nothing.js']) {
      t.is((await plain.get(tricky.slice(1))).statusCode, 404, tricky);
    }
    const script = await page.request.get(`${api.url}/assets/app.js`);
    t.regex(script.headers()['content-type'], /^text\/javascript/);
    t.regex(script.headers()['content-security-policy'], /default-src 'none'/);

    await signIn('pdk_not-a-token');
    await page.getByRole('alert').filter({ hasText: 'unknown or revoked token (unauthorized)' }).waitFor();
    t.deepEqual((await storage()).session, {}, 'a refused token is not kept');
    await shot('sign-in');
    await signIn(alice.token);
    await page.locator('header .who', { hasText: 'alice (user)' }).waitFor();
    t.false(page.url().includes(alice.token), 'never in the URL');
    const kept = await storage();
    t.deepEqual(kept.session, { 'paddock.token': alice.token });
    t.is(kept.local, 0);
    t.is(kept.cookie, '');
  },
);

test.serial('a reservation made with the CLI reaches ready on the page, its stage timeline filled live from the event stream', async (t) => {
  const made = await runPaddock(api.url, alice.token, ['reserve', 'arch=x86_64', '--image', 'tiny:test', '--lease', '10m', '--json']);
  t.is(made.code, 0, made.stderr);
  reservationId = (JSON.parse(made.stdout) as { id: string }).id;
  await page.click('nav >> text=Reservations');
  await page.click(`a[href="#/reservations/${reservationId}"]`);
  const member = page.locator('[data-allocation="main.0"]');
  await member.locator('.badge', { hasText: /^ready$/ }).waitFor({ timeout: slow });
  t.is(await member.locator('td.stage.done').count(), 4, 'power, boot, address and SSH stages have times');
  const events = await page.locator('ol.events li').allTextContents();
  const provisioning = events.findIndex((line) => /state .*→ provisioning/.test(line));
  const ready = events.findIndex((line) => /state .*→ ready/.test(line));
  t.true(provisioning >= 0 && ready > provisioning, `provisioning, then ready: ${events.join(' | ')}`);
  await shot('reservation');
});

test.serial(
  "the owner types a command at the VM's console in the terminal and sees the answer, as text; what the VM prints shows live; another user's token opens nothing",
  async (t) => {
    await page.click(`text=Console of ${vm}`);
    await page.locator('[data-mode=write]').waitFor();
    await page.click('.terminal');
    await page.keyboard.type("echo '<b>typed</b>' answer-$((6*7))");
    await page.keyboard.press('Enter');
    await page.locator('.xterm-rows', { hasText: '<b>typed</b> answer-42' }).waitFor();
    t.is(await page.locator('.terminal b').count(), 0, 'console text is never markup');
    const reservation = await alice.client.reservation(reservationId, { renew: false });
    const printed = await reservation.run('main', 'echo from-ssh-$((2*21)) > /dev/ttyS0');
    t.is(printed.code, 0, printed.stderr);
    await page.locator('.xterm-rows', { hasText: 'from-ssh-42' }).waitFor();
    await shot('console');

    // The subprotocol carries a token, never the URL; another user's token opens nothing.
    const url = `${api.url.replace('http', 'ws')}/v1/reservations/${reservationId}/console/stream?machine=${vm}`;
    const attempt = (protocols: string[], query = '') =>
      new Promise<number | string>((resolve) => {
        const socket = new WebSocket(url + query, protocols);
        socket.once('open', () => {
          resolve(`open:${socket.protocol}`);
          socket.close();
        });
        socket.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
        socket.once('error', () => resolve('error'));
      });
    t.is(await attempt(['paddock', `paddock.bearer.${alice.token}`]), 'open:paddock', 'the token is never echoed back');
    t.is(await attempt(['paddock', `paddock.bearer.${bob.token}`]), 403);
    t.is(await attempt(['paddock', 'paddock.bearer.pdk_forged']), 401);
    t.is(await attempt(['paddock'], `&token=${alice.token}`), 400);
  },
);

test.serial('the queue shows a waiting request with its position and why it waits; cancel on the page cancels it', async (t) => {
  const made = await runPaddock(api.url, alice.token, ['reserve', 'arch=x86_64', '--image', 'tiny:test', '--json']);
  t.is(made.code, 0, made.stderr);
  const queuedId = (JSON.parse(made.stdout) as { id: string }).id;
  await page.click('nav >> text=Queue');
  const entry = page.locator(`article[data-reservation="${queuedId}"]`);
  await entry.locator('.position', { hasText: '#1' }).waitFor();
  await entry.locator('.explain li li', { hasText: vm }).waitFor();
  t.regex(await entry.locator('.explain').innerText(), /1 match, 0 free now/);
  await shot('queue');
  await entry.locator('button', { hasText: 'Cancel' }).click();
  await entry.waitFor({ state: 'detached' });
  t.is(((await api.http().get(`v1/reservations/${queuedId}`)).body as ReservationView).state, 'cancelled');
});

test.serial("a user's maintenance click is refused with a readable message, and the machine stays as it was", async (t) => {
  await page.click('nav >> text=Machines');
  const row = page.locator(`tr[data-machine="${vm}"]`);
  await row.locator('.badge', { hasText: 'reserved' }).waitFor();
  // The machines and the reservations are two polls: the holder shows once both have answered.
  await row.locator('td a', { hasText: 'alice' }).waitFor();
  t.is(await row.locator('td', { hasText: 'alice' }).count(), 1, 'the holder is shown');
  await row.locator('button', { hasText: 'Maintenance' }).click();
  const notice = page.getByRole('alert');
  await notice.waitFor();
  t.regex(await notice.innerText(), /admin.*\(forbidden\)/i);
  await shot('machines');
  t.is(((await api.http().get(`v1/machines/${vm}`)).body as MachineView).state, 'reserved');
});

test.serial('release on the page ends the reservation and frees the machine', async (t) => {
  await page.goto(`${api.url}/#/reservations/${reservationId}`);
  await page.locator('button', { hasText: 'Release' }).first().click();
  await page.locator('h2 .badge', { hasText: /releasing|released/ }).waitFor();
  const deadline = Date.now() + slow;
  let state = '';
  while (Date.now() < deadline && state !== 'available') {
    state = ((await api.http().get(`v1/machines/${vm}`)).body as MachineView).state;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  t.is(state, 'available');
});

test.serial('signed in as an admin: a reason holding HTML shows as text; maintenance and activate go through', async (t) => {
  await page.click('header button', { timeout: 5000 });
  await signIn(api.adminToken);
  await page.locator('header .who', { hasText: 'admin (admin)' }).waitFor();
  const row = page.locator(`tr[data-machine="${vm}"]`);
  await row.locator('button', { hasText: 'Maintenance' }).click();
  await row.locator('.badge', { hasText: 'maintenance' }).waitFor();
  const hostile = '<img src=x onerror="window.pwned=1"> swap the disk';
  t.is((await api.http().post(`v1/machines/${vm}/maintenance`, { json: { reason: hostile } })).statusCode, 200);
  await row.locator('td.why', { hasText: hostile }).waitFor();
  t.is(await page.locator('main img').count(), 0);
  t.is(await page.evaluate(() => (globalThis as unknown as BrowserGlobals).pwned), undefined);
  await shot('machines-admin');
  await row.locator('button', { hasText: 'Activate' }).click();
  await row.locator('.badge', { hasText: 'available' }).waitFor();
  t.is(((await api.http().get(`v1/machines/${vm}`)).body as MachineView).state, 'available');
});

test.serial('images with size and expiry; a run of a job with its log live; then sign out leaves nothing behind', async (t) => {
  await page.click('nav >> text=Images');
  const image = page.locator('tr[data-image="tiny:test"]');
  await image.waitFor();
  t.regex(await image.innerText(), /tiny:test\s+bundle\s+x86_64\s+[\d.]+ MiB\s+alice\b.*never/s);
  await shot('images');
  const run = await alice.client.jobs.run('steps');
  await page.click('nav >> text=Jobs');
  await page.locator(`a[href="#/runs/${run.id}"]`).click();
  await page.locator('pre.log', { hasText: '<i>step one</i>' }).waitFor({ timeout: 120_000 });
  t.is(await page.locator('pre.log i').count(), 0, 'a log is text, never markup');
  await page.locator('pre.log', { hasText: 'step two' }).waitFor({ timeout: 120_000 });
  await page.locator('h2 .badge', { hasText: 'passed' }).waitFor({ timeout: 120_000 });
  await shot('run');
  await page.click('nav >> text=Jobs');
  await page.locator('td', { hasText: 'steps.sh' }).waitFor();
  await shot('jobs');
  await page.click('header button');
  await page.locator('input[name=token]').waitFor();
  const left = await storage();
  t.deepEqual(left.session, {}, 'no token in storage after sign out');
  t.is(left.local, 0);
  t.deepEqual(
    pageErrors.filter((line) => /Content Security Policy|Refused/i.test(line)),
    [],
    'nothing the page needs was refused by its policy',
  );
});
