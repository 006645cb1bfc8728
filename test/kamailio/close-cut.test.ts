/**
 * A connector closing against a stand-in for Kamailio (an evapi peer and a
 * JSON-RPC stub) and a real gateway: a call at its paid end, its cut ordered
 * for the end of its last paid second, is still cut when the close begins
 * before that, and so is one whose last paid second's tick is still waiting
 * for Tessera's word (a cut-off, or nothing) when the close begins.
 */
import { describe, expect, it } from 'vitest';
import { soldIds, talkProduct } from '../support/harness';
import { captureLog } from '../support/log';
import { SwitchProxy } from '../support/switch-proxy';
import { useFakeStack } from './fake-kamailio';
import { recordOf } from './records';
import { until } from './stack';

/**
 * A call on `SHORT` (2 paid seconds) through a proxy in front of the gateway, whose connector begins
 * to close (waiting `waitMs` at most) the moment the tick of its last paid second passes: Tessera's
 * answers to it are held back until `word` is called, if ever.
 */
async function closingAtPaidEndTick(
  s: ReturnType<typeof useFakeStack>,
  ci: string,
  he: number,
  waitMs: number,
): Promise<{
  d: { ci: string; he: number; hi: number };
  closed: Promise<void>;
  word: () => void;
  done: () => Promise<void>;
}> {
  const [id] = await soldIds(s.h, SHORT, 1);
  const d = { ci, he, hi: 4002, id: id!, dest: '33612345678' };
  const call = `${d.ci}:${d.he}.${d.hi}`;
  let closed: Promise<void> | undefined;
  const proxy = new SwitchProxy(s.gw.port, (m) => {
    if (m.op === 'tick' && m.call === call && m.sec === 2 && !closed) {
      proxy.holdAnswers();
      closed = c.close(waitMs);
    }
    return undefined;
  });
  const c = s.connector({ gateway: await proxy.listen() });
  c.start();
  await until('the connector to attach', () => s.evapi.socks.size > 0);
  s.evapi.send({ ev: 'invite', ...d, ti: he, tl: he, si: '127.0.0.9', ts: Date.now() / 1000 });
  await until('the call to be admitted', () => s.evapi.answers.find((a) => a.ti === he && a.sec !== undefined));
  s.evapi.send({ ev: 'answer', ...d, ts: Date.now() / 1000 });
  await until('the close to begin', () => closed !== undefined);
  // Off evapi (the peer saw it leave): the close has made its choice of what it owes.
  await until('the connector to leave evapi', () => s.evapi.socks.size === 0);
  const done = async (): Promise<void> => {
    await c.close(0);
    await proxy.close();
  };
  return { d, closed: closed!, word: () => proxy.releaseAnswers(), done };
}

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

  it("cuts a call whose last paid second's tick has had no answer when the close begins", async () => {
    // The close begins between the tick of the last paid second and its cut-off. Until 2026-12-08
    // the connector owed nothing, left at once with the cut-off on its way, and the call talked on
    // past what it paid to Kamailio's fail-safe (its grant plus grace), unbilled.
    const t = await closingAtPaidEndTick(s, 'tick-then-close@close-cut', 42, 5000);
    try {
      t.word();
      await t.closed;
      expect(s.rpc.calls.filter((r) => r.method === 'dlg.end_dlg').map((r) => r.params)).toContainEqual([
        t.d.he,
        t.d.hi,
      ]);
      expect(await recordOf(s.h, t.d.ci, 5000)).toMatchObject({ cause: 'cutoff', sec: '2' });
    } finally {
      await t.done();
    }
  });

  it("cuts at its paid end a call whose last paid second's tick never gets an answer", async () => {
    // No word at all (the gateway stalled): as a connector not closing would at its next tick, the
    // closing one cuts the call at its paid end (`max_sec`), never leaving it to the fail-safe.
    const t = await closingAtPaidEndTick(s, 'tick-no-word@close-cut', 43, 1500);
    try {
      await t.closed;
      expect(s.rpc.calls.filter((r) => r.method === 'dlg.end_dlg').map((r) => r.params)).toContainEqual([
        t.d.he,
        t.d.hi,
      ]);
      expect(await recordOf(s.h, t.d.ci, 5000)).toMatchObject({ cause: 'max_sec', sec: '2' });
    } finally {
      await t.done();
    }
  });
});
