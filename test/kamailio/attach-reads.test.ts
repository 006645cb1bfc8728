/**
 * The reads of what Kamailio keeps, as a connector attaches (the stops
 * handed on, the dialog events no connector heard, the dialogs up), against
 * a stand-in for Kamailio (an evapi peer and a JSON-RPC stub) and a real
 * gateway: one Kamailio answers with an error goes again less and less
 * often, said once with what to do.
 */
import { describe, expect, it } from 'vitest';
import { talkProduct } from '../support/harness';
import { captureLog } from '../support/log';
import { useFakeStack } from './fake-kamailio';
import { until } from './stack';

const TALK = talkProduct({ name: 'talk-attach-reads', face: 1_000_000, price: 1_000_000 });

describe('kamailio connector: reads at attach that Kamailio refuses', () => {
  const s = useFakeStack([TALK], 'kamailio-attach-reads');

  it('backs off, doubling, and says so once, when Kamailio lacks htable `ends`', async () => {
    // A kamailio.cfg from before `ends` existed answers every read of it "No such htable". Until
    // 2026-12-08 the read went again every 500 ms for as long as evapi stayed up, an RPC request
    // (and a debug line) each time, with nothing to tell the operator what was wrong.
    s.rpc.missing.add('ends');
    const { log, lines } = captureLog('debug');
    const c = s.connector({ log });
    const reads = (): number[] =>
      s.rpc.calls.filter((r) => r.method === 'htable.dump' && r.params[0] === 'ends').map((r) => r.at);
    c.start();
    try {
      await until('four reads of `ends`', () => reads().length >= 4, 10_000);
      const at = reads();
      const gaps = at.slice(1, 4).map((t, i) => t - at[i]!);
      // 0.5, 1 and 2 s apart at least (a timer never fires early; a busy machine only makes them longer).
      expect(gaps.map((g, i) => g >= 500 * 2 ** i - 20)).toEqual([true, true, true]);
      // Said once, at error: the later refusals at debug.
      const refused = lines.filter((l) => l.level >= 40);
      expect(refused.map((l) => l.msg)).toEqual([
        'rpc: Kamailio refuses to read the dialog events no connector heard; run deploy/kamailio/kamailio.cfg of this release (its htables owed and ends) and restart Kamailio; asked again less and less often',
      ]);
      expect(refused[0]).toMatchObject({ err: 'rpc htable.dump: No such htable' });
      // The steps after it went on: the dialogs up were listed to take calls up.
      expect(s.rpc.calls.some((r) => r.method === 'dlg.list')).toBe(true);
    } finally {
      s.rpc.missing.clear();
      await c.close(0);
    }
  });

  it('lists the dialogs up again soon after an error answer: the calls to take up must be ticked in time', async () => {
    // The listing exists in every kamailio.cfg: its error is passing (a Kamailio short of memory for a
    // long list), not a cfg to replace. Backed off like the htable reads, the fifth refusal put the
    // listing 15 s off, past the reaper's STALE_AFTER_MS for every call to take up.
    s.rpc.refused.set('dlg.list undefined', 5);
    const { log, lines } = captureLog('debug');
    const c = s.connector({ log });
    const from = s.rpc.calls.length;
    const lists = (): number[] =>
      s.rpc.calls
        .slice(from)
        .filter((r) => r.method === 'dlg.list')
        .map((r) => r.at);
    c.start();
    try {
      await until('six listings', () => lists().length >= 6, 20_000);
      const at = lists();
      // 0.5 s apart (2.5 s in all; a busy machine makes it longer): backing off, 15.5 s.
      expect(at[5]! - at[0]!).toBeLessThan(8000);
      expect(lines.filter((l) => l.level >= 40).map((l) => [l.level, l.msg])).toEqual([
        [40, 'rpc: cannot list dialogs to take up calls already up; trying again'],
      ]);
    } finally {
      s.rpc.refused.clear();
      await c.close(0);
    }
  });
});
