// The emulated lab as one lab host runs it, for a test that puts lab hosts in network namespaces:
// started inside one (`ip netns exec NS node --import tsx in-namespace.ts LAB_HOST NAME`), it starts
// one board (its pdudaemon and serial line, its QEMU when switched on) on that namespace's own
// loopback, prints `{ yaml, dir }` (the board's machine entry for the API's config) as one JSON
// line, and runs until SIGTERM, when it switches the board off and removes the lab.
import { startLab } from './index.js';

const [labHost, name] = process.argv.slice(2);
if (!labHost || !name) throw new Error('usage: in-namespace.ts LAB_HOST BOARD_NAME');
const lab = await startLab(1);
process.stdout.write(`${JSON.stringify({ yaml: lab.boardYaml(lab.boards[0], { name, labHost }), dir: lab.dir })}\n`);
process.once('SIGTERM', () => void lab.stop().finally(() => process.exit(0)));
