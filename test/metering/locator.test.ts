/**
 * The gateway's memory of where calls live (CallLocator): it saves the index
 * lookup on every tick, and forgets calls it has not seen for a while, so a
 * call whose stop never reaches this gateway (reaped, stopped under another
 * token name or on another gateway) leaves nothing behind once traffic stops.
 * A call forgotten is still found through its index in Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { MAX_CALL_SEC } from '../../src/protocol/switch';
import {
  gateway,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  withGateway,
  type Harness,
} from '../support/harness';
import { until } from '../support/wait';
import type { Client } from '../support/ws-client';
import { callIndexKey, connectSwitch, newCall } from './fixtures';

const DEST = '4912345';
const P = talkProduct({ maxCalls: 5 });

let h: Harness;
let gw: Gateway;
let c: Client;
let sw: string;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P]);
  // Calls go quiet fast; no reaper round closes them while the test looks.
  gw = await gateway(h, { staleAfterMs: 300, reapIntervalMs: 600_000 });
  ({ c, name: sw } = await connectSwitch(h, gw.port));
});
afterAll(async () => {
  await c?.close();
  await gw?.close();
  await h?.stop();
});

describe('call locator', () => {
  it('forgets calls it has not seen for a while, and finds them again in Redis', async () => {
    const [id] = await soldIds(h, P);
    const calls = [newCall(), newCall(), newCall()];
    for (const call of calls) {
      expect((await c.request({ op: 'start', ref: call, call, id, dest: DEST })).op).toBe('started');
    }
    const { locator } = gw.metering;
    // Their switch went silent (a stop that never comes): nothing stays in memory.
    await until(() => locator.size === 0, 10_000, 20, 'idle calls forgotten');
    expect(calls.some((call) => locator.cached(sw, call))).toBe(false);

    // A forgotten call is still the call: its next tick finds it through the index.
    const ticked = await c.request({ op: 'tick', ref: 't', call: calls[0], sec: 1 });
    expect(ticked.op).toBe('ticked');
    const stopped = await c.request({ op: 'stop', ref: 's', call: calls[0], sec: 1 });
    expect(stopped).toMatchObject({ op: 'stopped', billedSec: 1 });
    expect(locator.cached(sw, calls[0]!)).toBeUndefined();
  });

  it('finds a call forgotten between its updates for as long as the call may last, no longer', async () => {
    // A quota-mode call's updates come minutes apart: forgotten in between, each finds the call
    // through its index. That index must outlive the call, however short SESSION_TTL_SEC (the
    // closed session's keep) is set: past it, the call's next update would be unknown_call.
    const [id] = await soldIds(h, P);
    await withGateway(h, { staleAfterMs: 300, reapIntervalMs: 600_000, sessionTtlSec: 60 }, async (g) => {
      const { c: c2, name } = await connectSwitch(h, g.port);
      try {
        const call = newCall();
        expect((await c2.request({ op: 'start', ref: call, call, id, dest: DEST, mode: 'quota' })).op).toBe('started');
        await until(() => g.metering.locator.size === 0, 10_000, 20, 'the quiet call forgotten');
        const index = callIndexKey(h, name, call);
        expect(await h.r.ttl(index)).toBeGreaterThanOrEqual(MAX_CALL_SEC);
        expect((await c2.request({ op: 'update', ref: 'u', call, sec: 1 })).op).toBe('granted');
        expect(await c2.request({ op: 'stop', ref: 's', call, sec: 1 })).toMatchObject({ op: 'stopped', billedSec: 1 });
        // Stopped, it is kept as long as its closed session: a week more would be memory for nothing.
        expect(await h.r.ttl(index)).toBeGreaterThan(0);
        expect(await h.r.ttl(index)).toBeLessThanOrEqual(60);
        expect(await c2.request({ op: 'stop', ref: 's2', call, sec: 1 })).toMatchObject({
          op: 'stopped',
          billedSec: 1,
        });

        // So is a lost call's, recovered from its stop.
        const lost = newCall();
        const recovered = await c2.request({ op: 'stop', ref: 'r', call: lost, sec: 2, id, dest: DEST });
        expect(recovered).toMatchObject({ op: 'stopped', billedSec: 2 });
        const lostIndex = callIndexKey(h, name, lost);
        expect(await h.r.ttl(lostIndex)).toBeGreaterThan(0);
        expect(await h.r.ttl(lostIndex)).toBeLessThanOrEqual(60);
      } finally {
        await c2.close();
      }
    });
  });

  it('sends no index cut per stop at the default SESSION_TTL_SEC, where it would save nothing', async () => {
    // At the default (a week) the closed session outlives a stopped call's index within the ring
    // timeout anyway: an EXPIRE per stop would cost every call a round trip more for nothing.
    expect(gw.ctx.cfg.sessionTtlSec).toBe(MAX_CALL_SEC);
    const [id] = await soldIds(h, P);
    const call = newCall();
    expect((await c.request({ op: 'start', ref: call, call, id, dest: DEST })).op).toBe('started');
    expect(await c.request({ op: 'stop', ref: 's', call, sec: 1 })).toMatchObject({ op: 'stopped', billedSec: 1 });
    // As its claim left it: a week plus the ring timeout, less the call's few seconds.
    const index = callIndexKey(h, sw, call);
    expect(await h.r.ttl(index)).toBeGreaterThan(MAX_CALL_SEC);
  });
});
