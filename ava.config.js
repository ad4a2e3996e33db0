// ava forks its workers with its own Node flags plus `nodeArguments`: started as `node -e …`, every
// worker would start ava again (and so on). Refuse that way of starting it.
if (globalThis.process.execArgv.some((flag) => flag === '-e' || flag === '--eval' || flag.startsWith('--eval='))) {
  throw new Error('start ava with `npx ava [files]` (or npm test), not through node -e');
}

export default {
  files: ['test/**/*.test.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  timeout: '5m',
  concurrency: 2,
  workerThreads: false,
};
