// ava forks its workers with its own Node flags plus `nodeArguments`: started as `node -e …`, every
// worker would start ava again (and so on). Refuse that way of starting it.
if (globalThis.process.execArgv.some((flag) => flag === '-e' || flag === '--eval' || flag.startsWith('--eval='))) {
  throw new Error('start ava with `npx ava [files]` (or npm test), not through node -e');
}

// ava runs the files two at a time in this order (the queue is taken from the front as a worker
// frees): the longest first, so that none of them starts near the end while the other worker has
// nothing left to do. Figures from a whole run with `npx ava --verbose` (minutes on a loaded 2-core
// machine); the rest run after them in path order.
const longestFirst = [
  'test/api/concurrency.test.ts',
  'test/boards/board.test.ts',
  'test/boards/board-power.test.ts',
  'test/api/crash.test.ts',
  'test/api/config-modules.test.ts',
  'test/boards/console.test.ts',
  'test/api/tunnels.test.ts',
  'test/api/consoles.test.ts',
  'test/api/console-logs.test.ts',
  'test/api/failures.test.ts',
];
const rank = (file) => {
  const index = longestFirst.findIndex((name) => file.endsWith(`/${name}`) || file === name);
  return index === -1 ? longestFirst.length : index;
};

export default {
  files: ['test/**/*.test.ts'],
  sortTestFiles: (a, b) => rank(a) - rank(b) || a.localeCompare(b, [], { numeric: true }),
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  timeout: '5m',
  concurrency: 2,
  workerThreads: false,
};
