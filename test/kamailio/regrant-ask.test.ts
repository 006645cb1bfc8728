/**
 * The connector against a stand-in for Kamailio (an evapi peer and a
 * JSON-RPC stub) and a real gateway behind a relay that refuses what a test
 * picks: a tick asking for its re-grant that is refused for now is sent
 * again, and the call goes on as far as its money does.
 */
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { callIdOf } from '../../src/kamailio/call-id';
import { KamailioConnector } from '../../src/kamailio/connector';
import { soldIds, talkProduct, token } from '../support/harness';
import { jsonCall } from '../support/http';
import { SwitchProxy } from '../support/switch-proxy';
import { useFakeStack } from './fake-kamailio';
import { callRecords, recordOf } from './records';
import { sleep, until } from './stack';

/** 100 micro-units a second everywhere (STD_RATES): 3 seconds of credit, maxSec 3. */
const SHORT = talkProduct({ name: 'talk-ask-3s', face: 300, price: 300 });

describe('kamailio connector: re-grants asked again', () => {
  const s = useFakeStack([SHORT], 'kamailio-ask');
  let admin: string;

  beforeAll(async () => {
    admin = await token(s.h, 'admin', 'kamailio-ask-topup');
  });

  it("sends again the paid end's tick refused `overloaded`: a call topped up talks on, billed to its end", async () => {
    // A 3-second ID topped up while it talks: the tick of its third second asks for its answer,
    // which carries the top-up. Refused `overloaded` (the gateway's in-flight bound, a burst), it was
    // not sent again: the next tick found no word of more and the call was cut `max_sec` at 3 s.
    const [id] = await soldIds(s.h, SHORT, 1);
    const dialog = { ci: 'asked-again@probe', he: 21, hi: 2001, id: id!, dest: '33612345678' };
    const call = callIdOf(dialog.ci, dialog.he, dialog.hi);
    // The paid end's tick asks (ref g3): refused twice, then let through.
    const proxy = new SwitchProxy(s.gw.port, (m) =>
      m.op === 'tick' && m.call === call && m.ref === 'g3' && proxy.refused.length < 2 ? 'overloaded' : undefined,
    );
    const c = s.connector({ gateway: await proxy.listen() });
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0);
      s.evapi.send({ ev: 'invite', ...dialog, ti: 1, tl: 2, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === 1 && a.sec !== undefined));
      const answered = Date.now() / 1000;
      s.evapi.send({ ev: 'answer', ...dialog, ts: answered });
      const topup = await jsonCall(s.gw, 'POST', `/v1/admin/ids/${id}/topup`, {
        token: admin,
        idem: `ask-${id}`,
        body: { amount: 1000 },
      });
      expect(topup).toMatchObject({ status: 200 });
      await until("the paid end's tick to be refused", () => proxy.refused.length > 0, 5000);
      // Past its first maxSec and the tick after it: not cut, and its tick was asked again.
      await sleep(Math.max(0, (answered + 5) * 1000 - Date.now()));
      expect(s.rpc.calls.filter((r) => r.method === 'dlg.end_dlg')).toEqual([]);
      expect(await callRecords(s.h, dialog.ci)).toEqual([]);
      expect(proxy.refused).toHaveLength(2);
      s.evapi.send({ ev: 'end', ...dialog, ats: answered, ts: answered + 5.5 });
      const rec = await recordOf(s.h, dialog.ci, 5000);
      expect([rec.sec, rec.cause, rec.cost]).toEqual(['6', 'hangup', '600']);
    } finally {
      await c.close(0);
      await proxy.close();
    }
  });

  it('with no word of more at the paid end, the next tick is due tickLeadMs early too, not spun for', async () => {
    // The paid end's tick, sent tickLeadMs before the end, gets no answer (refused every time). The
    // next was scheduled tickLeadMs before its second too, but counted only whole seconds when it
    // ran: it found nothing new to send and rescheduled itself at once, about once a millisecond,
    // until its second began (some 200 wake-ups a call, the cut 1000 ms past the end, not 800).
    const [id] = await soldIds(s.h, SHORT, 1);
    const dialog = { ci: 'no-word@probe', he: 22, hi: 2002, id: id!, dest: '33612345678' };
    const call = callIdOf(dialog.ci, dialog.he, dialog.hi);
    const proxy = new SwitchProxy(s.gw.port, (m) =>
      m.op === 'tick' && m.call === call && m.ref ? 'overloaded' : undefined,
    );
    const ticks = vi.spyOn(KamailioConnector.prototype as unknown as { tick(c: unknown): void }, 'tick');
    const c = s.connector({ gateway: await proxy.listen() });
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0);
      s.evapi.send({ ev: 'invite', ...dialog, ti: 3, tl: 2, si: '127.0.0.9', ts: Date.now() / 1000 });
      await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === 3 && a.sec !== undefined));
      s.evapi.send({ ev: 'answer', ...dialog, ts: Date.now() / 1000 });
      await until('the cut at the paid end', () => s.rpc.calls.some((r) => r.method === 'dlg.end_dlg'), 8000);
      // Seconds 1, 2, 3 (early), then 4 (early), which finds no word and orders the cut; a few
      // more where a timer fires a millisecond before its due time. Spinning, it was 150-200.
      expect(ticks.mock.calls.length).toBeLessThanOrEqual(12);
      s.evapi.send({ ev: 'end', ...dialog, ts: Date.now() / 1000 });
      const rec = await recordOf(s.h, dialog.ci, 5000);
      expect([rec.sec, rec.cause]).toEqual(['3', 'max_sec']);
    } finally {
      ticks.mockRestore();
      await c.close(0);
      await proxy.close();
    }
  });
});
