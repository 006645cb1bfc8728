import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics';

/** How the call's record came to be written: the switch's stop, the reaper, or a stop billed as recovered. */
export type ClosedBy = 'stop' | 'stale' | 'recovered';

/** A call record just written, in the figures a log line gives. */
export interface Closed {
  /** The call's session key (`ts:{bN}:call:<switch>:<call>`): its keys, never the ID. */
  session: string;
  record: string;
  billedSec: number;
  cost: number;
  short: number;
  balance: number;
}

/**
 * A call that ran short (talked past what its ID could pay: the record's
 * `short`, charged and never paid) is money lost, and a switch that overruns
 * its grants shows here first: counted and logged at `warn`, once per record.
 * The call is named by its session key and record, as the reaper names a
 * stale call; the record gives the ID's hash, the log never the ID.
 */
export function reportShort(metrics: Metrics, log: Logger, closedBy: ClosedBy, c: Closed): void {
  if (c.short <= 0) return;
  metrics.shortCalls.inc({ close: closedBy });
  log.warn(
    {
      session: c.session,
      record: c.record,
      close: closedBy,
      billedSec: c.billedSec,
      cost: c.cost,
      short: c.short,
      balance: c.balance,
    },
    'call ran short: it talked past what its ID could pay',
  );
}
