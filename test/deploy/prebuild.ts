// Builds the base and both container images into the build cache ahead of the tests (CI runs this
// before `npm test`, as it builds the test images), so test/deploy/container.test.ts finds every
// layer cached and spends its time on running the images, not on npm ci inside them.
import { build, buildBase, images } from '../helpers/container.js';

const started = Date.now();
await buildBase();
await build('Containerfile.api', images.api);
await build('Containerfile.runner', images.runner);
console.log(`container images built in ${Math.round((Date.now() - started) / 1000)} s`);
