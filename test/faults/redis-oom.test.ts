/**
 * Redis out of memory (`maxmemory` with noeviction, as deploy/redis.conf runs it): writes are
 * refused `unavailable`, but what only reads (a quote, a validate) is still answered, and an event
 * already delivered can still be deleted, or it would be POSTed again at every takeover.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway/server';
import { eventDone } from '../../src/hooks/scripts';
import { audit } from '../../src/ledger/audit';
import { HOOKS_GROUP } from '../../src/hooks/payload';
import { keys } from '../../src/redis/keys';
import {
  gateway,
  seedCatalog,
  soldIds,
  startHarness,
  talkProduct,
  token,
  uniq,
  type Harness,
} from '../support/harness';
import { metricsText, sample } from '../support/metrics';
import { Client, Scanner } from '../support/ws-client';

const TALK = talkProduct({ name: 'talk-oom' });
let h: Harness;
let gw: Gateway;

/** Any write that could grow memory is refused from now on (maxmemory 1 byte, noeviction). */
const memoryFull = (): Promise<unknown> => h.r.config('SET', 'maxmemory', '1');

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  gw = await gateway(h);
});
afterEach(async () => {
  await h.r.config('SET', 'maxmemory', '0');
});
afterAll(async () => {
  await gw.close();
  await h.stop();
});

describe('Redis out of memory', () => {
  it('refuses a start, and still answers a quote and a validate, which write nothing', async () => {
    const [id] = await soldIds(h, TALK);
    const sw = await Client.connect(gw.port, await token(h, 'switch'));
    const gate = await Scanner.connect(gw.port, await token(h, 'scanner'));
    try {
      await memoryFull();
      const start = await sw.request({ op: 'start', ref: 1, call: uniq('c'), id, dest: '4912345' });
      expect(start).toMatchObject({ op: 'error', reason: 'unavailable' });
      const quote = await sw.request({ op: 'quote', ref: 2, id, dest: '4912345' });
      expect(quote).toMatchObject({ op: 'quoted', rate: 100, balance: TALK.face });
      // A talk ID at a gate: the script ran and refused it, rather than Redis refusing the script.
      expect(await gate.validate({ id: id! })).toMatchObject({ reason: 'wrong_kind' });
      // What the operator sees: the start refused for memory (at its claim), by script; the reads not.
      const text = await metricsText(gw.port);
      expect(sample(text, 'tessera_script_failures_total', { script: 'call_claim', code: 'OOM' })).toBeGreaterThan(0);
      expect(sample(text, 'tessera_script_failures_total', { script: 'call_quote', code: 'OOM' })).toBeUndefined();
    } finally {
      await sw.close();
      await gate.close();
    }
  });

  it('deletes a delivered event while memory is full', async () => {
    const bucket = 3;
    const stream = keys.events(bucket);
    await h.r.xgroup('CREATE', stream, HOOKS_GROUP, '$', 'MKSTREAM').catch(() => undefined);
    const entry = (await h.r.xadd(stream, '*', 'type', 'topup', 'prod', TALK.name))!;
    await h.r.xreadgroup('GROUP', HOOKS_GROUP, 'probe', 'COUNT', 10, 'STREAMS', stream, '>');
    await memoryFull();
    await eventDone(h.ctx.scripts, bucket, entry);
    expect(await h.r.xlen(stream)).toBe(0);
  });

  it('audits live calls while memory is full: what a call holds is only read', async () => {
    const [id] = await soldIds(h, TALK);
    const sw = await Client.connect(gw.port, await token(h, 'switch'));
    try {
      const start = await sw.request({ op: 'start', ref: 1, call: uniq('c'), id, dest: '4912345' });
      expect(start).toMatchObject({ op: 'started' });
      await memoryFull();
      const report = await audit(h.ctx);
      expect(report.problems).toEqual([]);
    } finally {
      await sw.close();
    }
  });
});
