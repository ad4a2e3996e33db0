#!/usr/bin/env node
// The `paddock` command: registers tsx so Node runs the TypeScript sources, then hands the
// arguments to the CLI. The import is relative to this file, so it works from any directory.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/index.js');
await main(process.argv.slice(2));
