// The per-reservation console secret: what a connection to a board's console relay must answer
// before it sees or types anything. Derived from the reservation's private key, so it needs no
// storage of its own, survives restarts, and is known only where that key is (the API, the agent
// doing the reservation's work, the owner); it reveals nothing of the key.
import { createHmac } from 'node:crypto';

export function consoleSecret(reservation: { id: string; privateKey: string }): string {
  return createHmac('sha256', reservation.privateKey).update(`paddock console relay ${reservation.id}`).digest('base64url').slice(0, 32);
}
