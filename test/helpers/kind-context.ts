// A KindContext for driving a provisioner directly, without an agent: images come from local
// files given by ref, and losses are recorded for the test to check.
import type { ImageSource, KindContext, LocalImage } from '../../provisioners/types.js';

export interface TestKindContext extends KindContext {
  losses: { allocationId: string; reason: string; fault: string }[];
}

export function testKindContext(dataDir: string, images: Record<string, LocalImage> = {}): TestKindContext {
  const source: ImageSource = {
    fetch: async (ref) => {
      const image = images[ref];
      if (!image) throw new Error(`no test image ${ref}`);
      return image;
    },
  };
  const losses: TestKindContext['losses'] = [];
  return {
    dataDir,
    images: source,
    losses,
    lost: (request, reason, fault) => losses.push({ allocationId: request.allocationId, reason, fault }),
    log: () => undefined,
  };
}
