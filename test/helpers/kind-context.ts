// A KindContext for driving a provisioner directly, without an agent (the static kind uses none
// of it): no image store behind it, and losses are not expected.
import path from 'node:path';
import type { KindContext } from '../../provisioners/types.js';
import { silentLog } from '../../protocol/log.js';

export function testKindContext(dataDir: string): KindContext {
  return {
    dataDir,
    consolesDir: path.join(dataDir, 'agent', 'consoles'),
    images: {
      fetch: async (ref) => {
        throw new Error(`no image store in this test (asked for ${ref})`);
      },
      stored: async () => {
        throw new Error('no image store in this test');
      },
    },
    lost: (request, reason) => {
      throw new Error(`unexpected loss of ${request.allocationId}: ${reason}`);
    },
    log: silentLog(),
  };
}
