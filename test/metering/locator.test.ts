/**
 * The gateway's memory of where calls live (CallLocator): it saves the index
 * lookup on every tick, and forgets calls it has not seen for a while, so a
 * call whose stop never reaches this gateway (reaped, stopped under another
 * token name or on another gateway) leaves nothing behind once traffic stops.
 * A call forgotten is still found through its index in Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, type Harness } from '../support/harness';
import { until } from '../support/wait';
import type { Client } from '../support/ws-client';
import { connectSwitch, newCall } from './fixtures';

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
});
