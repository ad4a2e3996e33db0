// A KindContext for driving a provisioner directly, without an agent (the static kind uses none
// of it): no image store behind it, and losses are not expected; and a ProvisionState kept in
// memory, where the agent's loop would keep the provisioning record on disk.
import type { KindContext, ProvisionState } from '../../provisioners/types.js';

/** A provisioning record's detail held in memory (no agent, no journal). */
export function memoryState<Detail = unknown>(): ProvisionState<Detail> {
  let detail: Detail | undefined;
  return {
    read: async () => detail,
    save: async (next) => {
      detail = next;
    },
  };
}

export function testKindContext(dataDir: string): KindContext {
  return {
    dataDir,
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
    log: () => undefined,
  };
}
