/**
 * Output clients have not read yet, all of one gateway's connections together
 * (MAX_BACKPRESSURE_TOTAL_BYTES): WebSocket connections' as uWS holds it
 * (getBufferedAmount), and HTTP answers the kernel would not take yet, which
 * wait for onWritable. Each holder is bounded on its own, but clients that each
 * stay under their bound and read nothing could together hold any amount: past
 * the total the largest holders are closed until it is back under it.
 */
/** A WebSocket connection, or an HTTP answer. */
export type Holder = 'connection' | 'http';

export class OutputBudget {
  total = 0;
  private readonly held = new Map<object, { bytes: number; close: () => void; op: Holder }>();

  constructor(
    readonly max: number,
    /** Counts a holder closed: events{op, outcome: backpressure_total}. */
    private readonly closed: (op: Holder) => void,
  ) {}

  /** `holder` holds `bytes` unsent now; 0 forgets it. `close` frees what it holds, at once. */
  set(holder: object, bytes: number, close: () => void, op: Holder): void {
    const was = this.held.get(holder);
    this.total += bytes - (was?.bytes ?? 0);
    if (bytes <= 0) this.held.delete(holder);
    else if (was) was.bytes = bytes;
    else this.held.set(holder, { bytes, close, op });
    if (this.total > this.max) this.trim();
  }

  private trim(): void {
    const largest = [...this.held].sort((a, b) => b[1].bytes - a[1].bytes);
    for (const [holder, h] of largest) {
      if (this.total <= this.max) break;
      this.total -= h.bytes;
      this.held.delete(holder);
      this.closed(h.op);
      h.close();
    }
  }
}
