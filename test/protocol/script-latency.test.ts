/**
 * The script-latency histogram over real sockets: every metering and
 * redemption script a gateway runs shows in /metrics, once per call (the claims'
 * own Redis connection included), whichever service made the call.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { cdrsOf, connectSwitch, newCall } from '../metering/fixtures';
import { loadRedemptionCatalog, scannerToken, type Catalog } from '../redemption/fixtures';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, uniq, type Harness } from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { until } from '../support/wait';
import { Scanner } from '../support/ws-client';

let h: Harness;
let gw: Gateway;
let cat: Catalog;
beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  // A gateway of its own, so the histogram holds exactly this test's calls; a quiet call is reaped fast.
  gw = await gateway(h, { staleAfterMs: 300, ringTimeoutMs: 300, reapIntervalMs: 100 });
});
afterAll(async () => {
  await gw?.close();
  await h?.stop();
});

const count = (text: string, script: string): number | undefined =>
  sample(text, 'tessera_script_duration_seconds_count', { script });

it('times every metering and redemption script call into tessera_script_duration_seconds', async () => {
  const { c } = await connectSwitch(h, gw.port);
  const [billed, quiet] = (await soldIds(h, talkProduct(), 2)) as [string, string];
  const call = newCall();
  expect(await c.request({ op: 'start', ref: 1, call, id: billed, dest: '4912345' })).toMatchObject({ op: 'started' });
  expect(await c.request({ op: 'tick', ref: 2, call, sec: 1 })).toMatchObject({ op: 'ticked' });
  expect(await c.request({ op: 'stop', ref: 3, call, sec: 1 })).toMatchObject({ op: 'stopped' });
  const gone = newCall();
  expect(await c.request({ op: 'start', ref: 4, call: gone, id: quiet, dest: '4912345' })).toMatchObject({
    op: 'started',
  });
  await until(async () => (await cdrsOf(h, quiet, gone)).length > 0);
  await c.close();

  const [ticket] = (await soldIds(h, cat.ticket)) as [string];
  const s = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
  const scan = uniq();
  expect(await s.validate({ id: ticket })).toMatchObject({ op: 'valid' });
  expect(await s.redeem({ scan, id: ticket })).toMatchObject({ op: 'redeemed' });
  expect(await s.reverse(scan)).toMatchObject({ op: 'reversed' });
  await s.close();

  const text = await metricsText(gw.port);
  expect(count(text, 'call_start')).toBe(2);
  expect(count(text, 'call_tick')).toBe(1);
  expect(count(text, 'call_stop')).toBe(1);
  // Every sweep that finds the call stale runs call_reap; the first one closes it.
  expect(count(text, 'call_reap')).toBeGreaterThanOrEqual(1);
  expect(count(text, 'scan_claim')).toBe(1);
  expect(count(text, 'redeem')).toBe(1);
  expect(count(text, 'validate')).toBe(1);
  expect(count(text, 'reverse')).toBe(1);
  expect(sample(text, 'tessera_script_duration_seconds_sum', { script: 'redeem' })).toBeGreaterThan(0);
});
