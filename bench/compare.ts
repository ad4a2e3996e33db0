// Reserve→ready through Paddock against a plain script doing the same by hand: rounds alternate
// which goes first (so neither always runs on a warmer machine), and the medians are compared.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Paddock } from '../client/index.js';

/** Seconds from reserving one VM of `image` until it is ready; then released, and the slot free again. */
export async function reserveToReady(paddock: Paddock, image: string, timeoutSeconds: number): Promise<number> {
  const started = process.hrtime.bigint();
  const reservation = await paddock.reserve({ members: [{ role: 'vm', spec: 'arch=x86_64', image }], lease: '60m' }, { renew: false });
  await reservation.ready({ timeout: timeoutSeconds });
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  await reservation.release();
  while ((await paddock.machines()).some((machine) => machine.state !== 'available')) await sleep(50);
  return elapsed;
}
export async function compareToPlain(options: {
  rounds: number;
  what: string;
  aim: number;
  plain: (round: number) => Promise<number>;
  paddock: () => Promise<number>;
}): Promise<void> {
  const times: { plain: number; paddock: number }[] = [];
  for (let round = 0; round < options.rounds; round++) {
    const time = { plain: 0, paddock: 0 };
    for (const which of round % 2 === 0 ? (['plain', 'paddock'] as const) : (['paddock', 'plain'] as const)) {
      time[which] = which === 'plain' ? await options.plain(round) : await options.paddock();
    }
    times.push(time);
    console.log(`round ${round + 1}: plain script ${time.plain.toFixed(2)} s, Paddock ${time.paddock.toFixed(2)} s`);
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const plainMedian = median(times.map((time) => time.plain));
  const paddockMedian = median(times.map((time) => time.paddock));
  console.log(
    `${options.what}: Paddock ${paddockMedian.toFixed(2)} s vs plain script ${plainMedian.toFixed(2)} s (medians of ${options.rounds}): ratio ${(paddockMedian / plainMedian).toFixed(3)} (aim: at most ${options.aim.toFixed(2)})`,
  );
}
