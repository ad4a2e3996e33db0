// ava forks its workers with its own Node flags plus `nodeArguments`: started as `node -e …`, every
// worker would start ava again (and so on). Refuse that way of starting it.
if (globalThis.process.execArgv.some((flag) => flag === '-e' || flag === '--eval' || flag.startsWith('--eval='))) {
  throw new Error('start ava with `npx ava [files]` (or npm test), not through node -e');
}

// ava runs the files two at a time in this order (the queue is taken from the front as a worker
// frees): the longest first, so that none of them starts near the end while the other worker has
// nothing left to do. The order is that of a whole run timed with `npx ava --verbose` on a loaded
// 2-core machine (the concurrency test about 7.5 min alone, the board files 2 to 11 min, down to
// about 1.5 min). The rest run after, in path order.
const longestFirst = [
  // Builds the container images: about 15 min the first time on a machine, a few minutes with its
  // cache (CI fills it before the suite: test/deploy/prebuild.ts).
  'test/deploy/container.test.ts',
  'test/api/concurrency.test.ts',
  'test/boards/overlay.test.ts',
  'test/boards/board.test.ts',
  'test/provisioners/qemu-cloud-init.test.ts',
  'test/boards/board-power.test.ts',
  'test/cli/run.test.ts',
  'test/boards/lab-hosts.test.ts',
  'test/boards/qualification.test.ts',
  'test/provisioners/openstack.test.ts',
  'test/boards/retry.test.ts',
  'test/boards/warm.test.ts',
  'test/images/races.test.ts',
  'test/api/crash.test.ts',
  'test/web/dashboard.test.ts',
  'test/examples/flagship.test.ts',
  'test/api/config-modules.test.ts',
  'test/api/bad-input.test.ts',
  'test/provisioners/openstack-warm.test.ts',
  'test/boards/console.test.ts',
  'test/provisioners/openstack-userdata.test.ts',
  'test/lab-host/several-hosts.test.ts',
  'test/api/tunnels.test.ts',
  'test/api/consoles.test.ts',
  'test/cli/lab-hosts.test.ts',
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
