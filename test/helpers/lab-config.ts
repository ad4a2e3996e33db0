// Small fixtures for API tests that need no real machine: static machines that are never
// provisioned (run with the agent off, a grant alone holds them) and a one-script git repository.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** YAML lines for `count` static machines `m00`, `m01` … labelled type=box, each on its own address. */
export function unprovisionedMachines(count: number, subnet = 1): string {
  return Array.from(
    { length: count },
    (_, index) =>
      `  - { name: m${String(index).padStart(2, '0')}, kind: static, labels: { type: box }, settings: { address: 127.0.${subnet}.${index + 1}, user: ci, adminKey: /nonexistent } }`,
  ).join('\n');
}

/** The config line that lets jobs name local repositories under `folder` (none are allowed by default). */
export function localRepositories(folder: string, transports = ['https', 'ssh']): string {
  return `repositories: { transports: [${transports.join(', ')}], localRoots: [${JSON.stringify(folder)}] }`;
}

/** A git repository in `folder` whose main branch holds an executable `ci.sh` (by default one that exits 0); its path. */
export function jobRepository(folder: string, script = '#!/bin/sh\ntrue\n'): string {
  const repo = path.join(folder, 'jobs.git');
  mkdirSync(repo);
  execFileSync('git', ['init', '-q', '-b', 'main', repo]);
  writeFileSync(path.join(repo, 'ci.sh'), script, { mode: 0o755 });
  execFileSync('git', ['-C', repo, 'add', '.']);
  execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'ci']);
  return repo;
}
