import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from './support/harness';
import { Client } from './support/ws-client';
import type { Gateway } from '../src/gateway/server';

let h: Harness;
let gw: Gateway;
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  gw = await gateway(h);
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

describe('smoke', () => {
  it('runs a call start to stop', async () => {
    const [id] = await soldIds(h, talkProduct());
    const c = await Client.connect(gw.port, await token(h));
    const started = await c.request({ op: 'start', ref: 1, call: 'c1', id, dest: '4912345' });
    expect(started).toMatchObject({ op: 'started', call: 'c1', maxSec: 10000, balance: 1_000_000, rate: 100 });
    const stopped = await c.request({ op: 'stop', ref: 2, call: 'c1', sec: 7 });
    expect(stopped).toMatchObject({ op: 'stopped', billedSec: 7, cost: 700, balance: 999_300 });
    await c.close();
  });
});
