// The `board` kind's descriptor: physical boards on this lab host, one machine per board. A
// machine's settings are the board's record (boards/board.ts: its PDU port, its console, how it
// boots); provisioner.ts drives the board through the drivers made from it.
import { boardSettingsSchema, type BoardSettings } from '../../boards/board.js';
import type { KindDescriptor } from '../types.js';

export const boardKind: KindDescriptor<BoardSettings> = {
  kind: 'board',
  settingsSchema: boardSettingsSchema,
  leaseActions: true,
  // A warm board is handed over by swapping the reservation's key in over SSH.
  warm: (settings) => (settings.ssh ? undefined : 'a board is kept warm only with ssh settings: the key is swapped over SSH at hand-over'),
  load: async () => (await import('./provisioner.js')).createBoardProvisioner,
};
