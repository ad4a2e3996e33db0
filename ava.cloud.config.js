// `npm run test:cloud`: the tests that need a real OpenStack, which test/cloud/up.sh brings up on
// this machine (Debian packages, about 1.5 minutes of apt the first time, then about 30 s and
// 2 GiB of memory). Not yet part of `npm test`.
import base from './ava.config.js';

export default { ...base, files: ['test/cloud/**/*.cloud.ts'] };
