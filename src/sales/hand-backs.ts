/**
 * Leases an ended attempt could not hand back (Redis refused the write), offered again until
 * Redis takes them or their lease is over anyway. Refused at the attempt's end (Redis failing
 * over, the record's slot being moved, memory full), the lease would keep every retry at 409
 * `in_progress` for the rest of PURCHASE_LEASE_MS although nothing runs any more. A lease
 * another attempt has taken since is not this one's to touch (setLease answers false and
 * changes nothing). Their timers go with the gateway: stop() clears them, and none is set after,
 * so a closed gateway touches Redis no more (its leases run out on their own).
 */
import type { Scripts } from '../redis/scripts';
import { setLease } from './scripts';

/** How often a lease Redis refused to take back is offered again. */
export const HAND_BACK_RETRY_MS = 250;

export class HandBacks {
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly scripts: Scripts) {}

  /** Hands the lease of `owner` on the record `key` back once Redis takes it, until `leaseEnd` (ms). */
  later(key: string, owner: string, leaseEnd: number): void {
    const again = (): void => {
      if (Date.now() >= leaseEnd || this.stopped) return;
      void setLease(this.scripts, key, owner, 0).then(
        () => undefined,
        () => this.after(again),
      );
    };
    this.after(again);
  }

  /** Clears every pending hand-back; later() does nothing from now on. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private after(fn: () => void): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, HAND_BACK_RETRY_MS);
    t.unref();
    this.timers.add(t);
  }
}
