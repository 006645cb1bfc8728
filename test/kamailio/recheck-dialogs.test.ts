/**
 * The connector back on evapi after a loss, against a stand-in for Kamailio
 * (an evapi peer and a JSON-RPC stub) and a real gateway: it lists the
 * dialogs and stops the calls whose dialog is gone (`lost`), but not a call
 * that began after the listing was asked for (its dialog could not be in it),
 * and not once it has begun to close (its calls are the next connector's).
 */
import { describe, expect, it } from 'vitest';
import { billedSeconds, kamailioUs } from '../../src/kamailio/billing';
import { callIdOf } from '../../src/kamailio/call-id';
import { soldIds, talkProduct } from '../support/harness';
import { SwitchProxy } from '../support/switch-proxy';
import { useFakeStack, type FakeStack } from './fake-kamailio';
import { callRecords, recordOf } from './records';
import { until } from './stack';

const TALK = talkProduct({ name: 'talk-recheck', face: 1_000_000, price: 1_000_000 });
const DEST = '33612345678';

/** How long the stand-in takes to list its dialogs after the loss: a Kamailio busy coming back. */
const SLOW_LIST_MS = 1500;

const listings = (s: FakeStack): number => s.rpc.calls.filter((r) => r.method === 'dlg.list').length;

/** Admits and answers a call on the stand-in, as transaction `ti`; its answer time (Kamailio's `ts`). */
async function talk(s: FakeStack, d: { ci: string; he: number; hi: number; id: string }, ti: number): Promise<number> {
  s.evapi.send({ ev: 'invite', ...d, dest: DEST, ti, tl: ti, si: '127.0.0.9', ts: Date.now() / 1000 });
  await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === ti && a.sec !== undefined));
  const ats = Date.now() / 1000;
  s.evapi.send({ ev: 'answer', ...d, dest: DEST, ts: ats });
  return ats;
}

/**
 * Drops the connector's evapi connection with the stand-in listing its dialogs slowly, and waits
 * until the connector, back on, has asked for the listing of its recheck.
 */
async function loseEvapi(s: FakeStack): Promise<void> {
  s.rpc.listDelayMs = SLOW_LIST_MS;
  const before = listings(s);
  for (const sock of s.evapi.socks) sock.destroy();
  await until('the recheck to list the dialogs', () => listings(s) > before && s.evapi.socks.size > 0);
}

describe('kamailio connector: dialogs rechecked after evapi came back', () => {
  const s = useFakeStack([TALK], 'kamailio-recheck');

  it('does not stop a call that began while its listing was on its way', async () => {
    // A call admitted and answered while Kamailio was still answering the recheck's dlg.list: its
    // dialog was not in the listing. Until 2026-12-08 it was taken for gone and stopped `lost` at
    // once (0 s): Tessera closed it while it talked, and its next tick had it cut `unmetered`.
    const [id] = (await soldIds(s.h, TALK, 1)) as [string];
    const d = { ci: 'began-during-listing@recheck', he: 51, hi: 5001, id };
    const c = s.connector();
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0 && listings(s) > 0);
      await loseEvapi(s);
      const listed = listings(s);
      const ats = await talk(s, d, 51);
      s.rpc.dialogs.push({ 'call-id': d.ci, h_entry: d.he, h_id: d.hi, state: 4, variables: [] });
      // The recheck has its listing (without the call) once the take-up asks for the next one.
      await until('the recheck to be done', () => listings(s) > listed, 5000);
      const ts = Date.now() / 1000;
      s.evapi.send({ ev: 'end', ...d, dest: DEST, ats, ts });
      const rec = await recordOf(s.h, d.ci, 5000);
      expect([rec.cause, Number(rec.sec)]).toEqual(['hangup', billedSeconds(kamailioUs(ats), kamailioUs(ts))]);
    } finally {
      s.rpc.dialogs.length = 0;
      s.rpc.listDelayMs = 0;
      await c.close(0);
    }
  });

  it('sends no `lost` stop once it has begun to close', async () => {
    // The close begins while the recheck's listing is on its way; the connector waits to deliver a
    // stop it owes (its gateway answers `unavailable`). Until 2026-12-08 the listing, answered
    // during that wait, had the connector stop `lost` a call it was leaving to the next connector
    // (one begun after the listing was asked for): Tessera closed it, and the connector metering
    // it on was told `call_ended` and cut it.
    const [owedId, id] = (await soldIds(s.h, TALK, 2)) as [string, string];
    const owed = { ci: 'owed@recheck', he: 52, hi: 5002, id: owedId };
    const d = { ci: 'left-on-close@recheck', he: 53, hi: 5003, id };
    const proxy = SwitchProxy.refusingStopsOf(s.gw.port, owedId);
    const c = s.connector({ gateway: await proxy.listen() });
    c.start();
    try {
      await until('the connector to attach', () => s.evapi.socks.size > 0 && listings(s) > 0);
      await talk(s, owed, 52);
      s.evapi.send({ ev: 'end', ...owed, dest: DEST, ts: Date.now() / 1000 });
      await until('the owed stop to be refused', () => proxy.refused.length > 0);
      await loseEvapi(s);
      await talk(s, d, 53);
      s.rpc.dialogs.push({ 'call-id': d.ci, h_entry: d.he, h_id: d.hi, state: 4, variables: [] });
      await until('the call to be ticked', async () => {
        const [session] = await s.h.r.keys(`ts:*:call:kamailio-recheck:${callIdOf(d.ci, d.he, d.hi)}`);
        return session !== undefined && Number(await s.h.r.hget(session, 'used')) >= 1;
      });
      // The wait outlasts the listing: its answer comes while the connector closes.
      await c.close(SLOW_LIST_MS + 1500);
      expect(await callRecords(s.h, d.ci)).toEqual([]);
    } finally {
      s.rpc.dialogs.length = 0;
      s.rpc.listDelayMs = 0;
      s.rpc.owed.clear();
      await c.close(0);
      await proxy.close();
    }
  });
});
