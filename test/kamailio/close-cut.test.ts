/**
 * A connector closing against a stand-in for Kamailio (an evapi peer and a
 * JSON-RPC stub) and a real gateway: a call at its paid end, its cut ordered
 * for the end of its last paid second, is still cut when the close begins
 * before that.
 */
import { describe, expect, it } from 'vitest';
import { soldIds, talkProduct } from '../support/harness';
import { captureLog } from '../support/log';
import { useFakeStack } from './fake-kamailio';
import { recordOf } from './records';
import { until } from './stack';

/** 100 micro-units a second everywhere: 2 seconds of credit. */
const SHORT = talkProduct({ name: 'talk-close-cut', face: 200, price: 200 });

describe('kamailio connector: a cut due as it closes', () => {
  const s = useFakeStack([SHORT], 'kamailio-close-cut');

  it('cuts a call whose cut at its paid end was ordered before the close began', async () => {
    // The last paid second's tick goes 200 ms before its end, and its cut-off orders the cut for
    // that end. The close begins in between: until 2026-12-08 it cleared the cut's timer, no
    // connector cut the call, and it talked on to Kamailio's fail-safe, past what it paid.
    const [id] = await soldIds(s.h, SHORT, 1);
    const d = { ci: 'paid-up@close-cut', he: 41, hi: 4001, id: id!, dest: '33612345678' };
    let closed: Promise<void> | undefined;
    // The close begins right after the cut-off is handled (setImmediate: once its handler returns).
    const { log } = captureLog('info', (line) => {
      if (line.msg !== 'cut-off') return;
      setImmediate(() => {
        closed = c.close();
      });
    });
    const c = s.connector({ log });
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0);
      s.evapi.send({ ev: 'invite', ...d, ti: 1, tl: 1, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === 1 && a.sec !== undefined));
      s.evapi.send({ ev: 'answer', ...d, ts: Date.now() / 1000 });
      await until('the close to begin', () => closed !== undefined);
      await closed;
      expect(s.rpc.calls.filter((r) => r.method === 'dlg.end_dlg').map((r) => r.params)).toEqual([[d.he, d.hi]]);
      expect(await recordOf(s.h, d.ci, 5000)).toMatchObject({ cause: 'cutoff', sec: '2' });
    } finally {
      await c.close(0);
    }
  });
});
