// The `board` kind's descriptor: physical boards on this lab host, one machine per board. A
// machine's settings are the board's record (boards/board.ts: its PDU port, its console, how it
// boots); provisioner.ts drives the board through the drivers made from it.
import { boardSettingsSchema, type BoardSettings } from '../../boards/board.js';
import type { KindDescriptor } from '../types.js';

export const boardKind: KindDescriptor<BoardSettings> = {
  kind: 'board',
  settingsSchema: boardSettingsSchema,
  leaseActions: true,
  load: async () => (await import('./provisioner.js')).createBoardProvisioner,
};
