// Power for boards: a driver switches one PDU port; the control around it (index.ts) serializes
// commands per PDU, enforces the board's minimum off-time, tracks the state where the PDU cannot
// report it, and reads it back where it can.

export type PowerState = 'on' | 'off';

/** One PDU port, as a driver reaches it. */
export interface PowerDriver {
  /** Names the PDU (not the port): commands to one PDU never interleave. */
  readonly pdu: string;
  /** Human-readable `pdu port`, for messages. */
  readonly describe: string;
  on(signal?: AbortSignal): Promise<void>;
  off(signal?: AbortSignal): Promise<void>;
  /** The port's state read back from the PDU; absent when the PDU cannot report it. */
  readState?(signal?: AbortSignal): Promise<PowerState>;
  /**
   * Whether the PDU answers, without switching anything: throws a PowerError saying what is wrong.
   * Absent where that cannot be asked without running a command (a `command` driver).
   */
  check?(signal: AbortSignal): Promise<void>;
}

/** A power command failed, or the state read back differs from the one commanded. */
export class PowerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PowerError';
  }
}

/** One command a PDU was sent, as it ended (for metrics): the driver's model, on or off, seconds taken, failed or not. */
export type PowerObserver = (command: { driver: string; operation: PowerState; seconds: number; failed: boolean }) => void;
