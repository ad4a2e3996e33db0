// Checks that a message carries nothing of a private key: no PEM armour, and no 16-character run
// of the key's body.
import type { ExecutionContext } from 'ava';

export function assertNoKeyMaterial(t: ExecutionContext, message: string, privateKey: string): void {
  t.false(message.includes('PRIVATE KEY'), 'no PEM armour in the message');
  const body = privateKey
    .split('\n')
    .filter((line) => line && !line.startsWith('-----'))
    .join('');
  const runs: string[] = [];
  for (let index = 0; index + 16 <= body.length; index += 8) runs.push(body.slice(index, index + 16));
  t.is(
    runs.find((run) => message.includes(run)),
    undefined,
    `the message (${message.length} chars) contains private key text`,
  );
}
