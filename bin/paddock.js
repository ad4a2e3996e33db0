#!/usr/bin/env node
// The `paddock` command: runs the TypeScript sources through tsx, from any working directory.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../client/cli.ts');
await main(process.argv.slice(2));
