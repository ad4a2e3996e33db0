// What the static provisioner does on a host, as POSIX shell run over an admin SSH connection:
// add a reservation's key to the authorized_keys file, remove it, list whose keys are there.
// Every line Paddock adds ends with the tag `paddock:<reservationId>` as its comment, so removal
// and the leak sweep touch only Paddock's lines and never the admin key or hand-added keys.
//
// Safety: the scripts are fixed text; the file path and tag travel as positional arguments
// (quoted for the login shell, `~/` expanded through "$HOME"), and the key line travels on stdin,
// so nothing from a request is ever interpolated into shell code.
import { normalizeKeyLine, scrub, sshExec, type SshClient } from '../ssh.js';

const tagPrefix = 'paddock:';
const reservationIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The comment that marks a reservation's lines. */
export function reservationTag(reservationId: string): string {
  if (!reservationIdPattern.test(reservationId)) throw new Error(`not a usable reservation id: ${JSON.stringify(reservationId)}`);
  return `${tagPrefix}${reservationId}`;
}

/** The authorized_keys line for a reservation: its key, with the reservation's tag as the comment. */
export function taggedKeyLine(publicKey: string, reservationId: string): string {
  return `${normalizeKeyLine(publicKey)} ${reservationTag(reservationId)}`;
}

/** One shell word, single-quoted. */
export function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** A remote path as a shell word; a leading `~/` still expands to the login user's home. */
export function remotePath(path: string): string {
  return path.startsWith('~/') ? `"$HOME"/${shellQuote(path.slice(2))}` : shellQuote(path);
}

// $1 = the authorized_keys file; the key line is on stdin. Creates the directory (0700) and the
// file (0600) when missing, adds the line unless it is there already, then checks it is there.
const addScript = `set -eu
umask 077
f=$1
line=$(cat)
dir=$(dirname -- "$f")
[ -d "$dir" ] || mkdir -p -- "$dir"
[ -e "$f" ] || : > "$f"
if ! grep -qxF -e "$line" -- "$f"; then
  if [ -s "$f" ] && [ -n "$(tail -c 1 -- "$f")" ]; then printf '\\n' >> "$f"; fi
  printf '%s\\n' "$line" >> "$f"
fi
grep -qxF -e "$line" -- "$f"`;

// $1 = the file, $2 = the tag. Rewrites the file without the tagged lines through a temporary file
// in the same directory (same mode and owner, atomic rename), and only if there is one to remove.
// Prints how many lines went.
const removeScript = `set -eu
f=$1
tag=$2
if [ -L "$f" ]; then f=$(readlink -f -- "$f"); fi
[ -f "$f" ] || { echo 0; exit 0; }
count=$(awk -v tag="$tag" '$NF == tag { n++ } END { print n + 0 }' "$f")
[ "$count" -gt 0 ] || { echo 0; exit 0; }
tmp=$(mktemp "$f.paddock.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cp -p -- "$f" "$tmp"
awk -v tag="$tag" '$NF != tag' "$f" > "$tmp"
mv -f -- "$tmp" "$f"
trap - EXIT
echo "$count"`;

// $1 = the file. Prints the tag of every Paddock line (one per line, possibly repeated).
const listScript = `set -eu
f=$1
[ -f "$f" ] || exit 0
awk '$NF ~ /^${tagPrefix}/ { print $NF }' "$f"`;

function command(script: string, ...words: string[]): string {
  return ['sh', '-c', shellQuote(script), 'paddock-sh', ...words].join(' ');
}

async function run(client: SshClient, what: string, commandLine: string, stdin?: string): Promise<string> {
  const result = await sshExec(client, commandLine, stdin === undefined ? {} : { stdin });
  if (result.code !== 0) {
    const detail = scrub(result.stderr.trim()).slice(0, 500);
    throw new Error(`${what} failed (exit ${result.code ?? 'by signal'})${detail ? `: ${detail}` : ''}`);
  }
  return result.stdout;
}

/** Adds the reservation's key line to `authorizedKeys`; adding it again changes nothing. */
export async function addReservationKey(client: SshClient, authorizedKeys: string, reservationId: string, publicKey: string): Promise<void> {
  const line = taggedKeyLine(publicKey, reservationId);
  await run(client, `adding the key of ${reservationId} to ${authorizedKeys}`, command(addScript, remotePath(authorizedKeys)), `${line}\n`);
}

/** Removes every line tagged for the reservation; returns how many there were (0 is fine). */
export async function removeReservationKeys(client: SshClient, authorizedKeys: string, reservationId: string): Promise<number> {
  const tag = reservationTag(reservationId);
  const output = await run(
    client,
    `removing the keys of ${reservationId} from ${authorizedKeys}`,
    command(removeScript, remotePath(authorizedKeys), shellQuote(tag)),
  );
  const count = Number.parseInt(output.trim(), 10);
  return Number.isNaN(count) ? 0 : count;
}

/** Reservation ids with at least one tagged line in `authorizedKeys`, sorted, each once. */
export async function listReservations(client: SshClient, authorizedKeys: string): Promise<string[]> {
  const output = await run(client, `listing the reservation keys in ${authorizedKeys}`, command(listScript, remotePath(authorizedKeys)));
  const ids = output
    .split('\n')
    .map((tag) => tag.trim().slice(tagPrefix.length))
    .filter((id) => reservationIdPattern.test(id));
  return [...new Set(ids)].sort();
}
