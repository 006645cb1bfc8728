/**
 * `tessera archive`: records written before a cut-off are archived to NDJSON
 * files and trimmed from their streams, their IDs' sums carried forward in a
 * checkpoint, so the conservation audit still balances every ID. The files
 * hold exactly the trimmed records; a second run changes nothing.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AuditReport } from '../../src/ledger/audit';
import { activateId } from '../../src/ledger/ids';
import { ArchiveRunning, archiveRecords } from '../../src/ledger/retention';
import { lookupSale } from '../../src/ledger/sale-lookup';
import { redisTimeMs } from '../../src/redis/clock';
import { keys } from '../../src/redis/keys';
import { refundSale } from '../../src/sales/admin';
import { HttpProvider } from '../../src/sales/provider';
import type { Gateway } from '../../src/gateway/server';
import { lines, runCliIn } from '../support/cli';
import { gateway, mint, seedCatalog, soldIds, startHarness, talkProduct, uniq, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { sleep } from '../support/wait';
import { type Client } from '../support/ws-client';
import { connectSwitch, newCall } from '../metering/fixtures';
import { loadRedemptionCatalog, scannerToken, type Catalog } from '../redemption/fixtures';

let h: Harness;
let gw: Gateway;
let sw: Client;
let cat: Catalog;
let tok: string;
const TALK = talkProduct({ name: 'talk-archive', face: 1_000_000, price: 1_000_000 });
const DEST = '4912345';

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  ({ c: sw } = await connectSwitch(h, gw.port));
  ({ tok } = await scannerToken(h));
});
afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await h?.stop();
});

async function call(id: string, sec: number): Promise<void> {
  const c = newCall('arc');
  expect(await sw.request({ op: 'start', ref: uniq('r'), call: c, id, dest: DEST })).toMatchObject({ op: 'started' });
  expect(await sw.request({ op: 'stop', ref: uniq('r'), call: c, sec })).toMatchObject({ op: 'stopped' });
}

async function redeem(id: string, item: string): Promise<string> {
  const scan = uniq();
  expect((await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan, id, item } })).status).toBe(200);
  return scan;
}

async function audit(): Promise<AuditReport> {
  const run = await runCliIn(h, 'audit', '--json');
  expect(run.code).toBe(0);
  return JSON.parse(run.out) as AuditReport;
}

/** Every record of every stream as export writes it (NDJSON), by kind. */
async function exported(): Promise<Record<string, Record<string, string>[]>> {
  const out: Record<string, Record<string, string>[]> = {};
  for (const kind of ['calls', 'sales', 'redemptions']) {
    const r = await runCliIn(h, 'export', kind, '--format', 'ndjson');
    out[kind] = lines(r.out).map((l) => JSON.parse(l) as Record<string, string>);
  }
  return out;
}

/** Every record in the archive files, by kind. */
function archived(dir: string): Record<string, Record<string, string>[]> {
  const out: Record<string, Record<string, string>[]> = {};
  for (const kind of ['calls', 'sales', 'redemptions']) {
    out[kind] = [];
    const kd = join(dir, kind);
    if (!existsSync(kd)) continue;
    for (const f of readdirSync(kd))
      out[kind].push(...lines(readFileSync(join(kd, f), 'utf8')).map((l) => JSON.parse(l) as Record<string, string>));
  }
  return out;
}

const byRecord = (a: Record<string, string>, b: Record<string, string>): number => (a.record! < b.record! ? -1 : 1);

describe('tessera archive', () => {
  it('archives and trims the records before the cut-off; the audit still balances; a second run changes nothing', async () => {
    // Before the cut-off: sales, calls, redemptions, a reversal and a refund on several IDs.
    const [a, b, refunded] = await soldIds(h, TALK, 3);
    const [wallet] = await soldIds(h, cat.wallet);
    await call(a!, 10);
    await call(b!, 5);
    await redeem(wallet!, 'beer');
    const water = await redeem(wallet!, 'water');
    expect((await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: water } })).status).toBe(200);
    const refund = await refundSale(h.ctx, new HttpProvider(h.cfg.provider.url!, 2000), refunded!, 'test', 'test');
    expect(refund.ok).toBe(true);

    const cutoff = (await redisTimeMs(h.r)) + 1;
    await sleep(5); // the records after the cut-off are written in a later millisecond

    // After the cut-off: more on the same IDs, and a new one.
    await call(a!, 3);
    await redeem(wallet!, 'beer');
    const [c] = await soldIds(h, TALK, 1);
    await call(c!, 2);

    const before = await audit();
    expect(before.problems).toEqual([]);
    const all = await exported();
    const old = (k: string) => all[k]!.filter((r) => Number(r.time) < cutoff).sort(byRecord);
    const recent = (k: string) => all[k]!.filter((r) => Number(r.time) >= cutoff).sort(byRecord);
    expect(old('calls')).toHaveLength(2);
    expect(old('sales')).toHaveLength(5); // four sales and a refund
    expect(old('redemptions')).toHaveLength(3);
    expect(recent('calls')).toHaveLength(2);

    const dir = join(h.dir, 'archive');
    const run = await runCliIn(h, 'archive', '--before', String(cutoff), '--out', dir);
    expect(run.code).toBe(0);
    expect(run.err).toContain(
      'archived and trimmed 2 call record(s), 5 sale record(s), 3 redemption record(s) written before',
    );

    // The files hold exactly the trimmed records, as export wrote them; Redis holds exactly the rest.
    const files = archived(dir);
    const left = await exported();
    const sorted = (x: Record<string, Record<string, string>[]>) =>
      Object.fromEntries(Object.entries(x).map(([k, v]) => [k, [...v].sort(byRecord)]));
    for (const k of ['calls', 'sales', 'redemptions']) {
      expect(files[k]!.sort(byRecord), k).toEqual(old(k));
      expect(left[k]!.sort(byRecord), k).toEqual(recent(k));
    }

    // The audit balances every ID, with the same totals as before.
    const after = await audit();
    expect(after.problems).toEqual([]);
    expect(after).toEqual(before);

    // A second run finds nothing to archive: files, streams, checkpoints and audit unchanged.
    const snapshot = (): Promise<string[]> =>
      Promise.all(
        Array.from({ length: h.cfg.buckets }, (_, i) => h.r.hgetall(keys.checkpoint(i)).then((x) => JSON.stringify(x))),
      );
    const ckpt = await snapshot();
    const again = await runCliIn(h, 'archive', '--before', String(cutoff), '--out', dir);
    expect(again.code).toBe(0);
    expect(again.err).toContain('archived and trimmed 0 call record(s), 0 sale record(s), 0 redemption record(s)');
    expect(sorted(archived(dir))).toEqual(sorted(files));
    expect(sorted(await exported())).toEqual(sorted(left));
    expect(await snapshot()).toEqual(ckpt);
    expect(await audit()).toEqual(before);
  });

  it('a run that died after writing its files and before trimming is resumed without writing a record twice', async () => {
    const [d, e] = await soldIds(h, TALK, 2);
    await call(d!, 4);
    await call(e!, 6);
    const cutoff = (await redisTimeMs(h.r)) + 1;
    const dir = join(h.dir, 'archive-crash');
    const expected = (await exported()).calls!.filter((r) => Number(r.time) < cutoff).sort(byRecord);
    expect(expected.length).toBeGreaterThanOrEqual(2);

    // The first run dies at its first trim: its page is in the file, fsynced, and still in Redis.
    const run = h.ctx.scripts.run.bind(h.ctx.scripts);
    const spy = vi.spyOn(h.ctx.scripts, 'run').mockImplementation((name, ...rest) => {
      if (name === 'trim') return Promise.reject(new Error('killed'));
      return run(name, ...rest);
    });
    try {
      await expect(archiveRecords(h.ctx, dir, cutoff)).rejects.toThrow('killed');
    } finally {
      spy.mockRestore();
    }
    const written = archived(dir);
    expect(written.calls!.length).toBeGreaterThan(0);
    // And a crash in the middle of a write left half a line behind.
    const [file] = readdirSync(join(dir, 'calls'));
    appendFileSync(join(dir, 'calls', file!), '{"record":"0/17');

    const again = await runCliIn(h, 'archive', '--before', String(cutoff), '--out', dir);
    expect(again.code).toBe(0);
    expect(archived(dir).calls!.sort(byRecord)).toEqual(expected);
    expect((await exported()).calls!.filter((r) => Number(r.time) < cutoff)).toEqual([]);
    expect((await audit()).problems).toEqual([]);
  });

  it('a half line cut off after a crash leaves the file whole when its tail starts inside a character', async () => {
    const [id] = await soldIds(h, TALK, 1);
    const { bucket } = h.ctx.ids.hash(id!);
    const dir = join(h.dir, 'archive-utf8');
    mkdirSync(join(dir, 'sales'), { recursive: true });
    const file = join(dir, 'sales', `b${bucket}.ndjson`);
    // Earlier runs' records, over 64 KiB of them, with text that is not ASCII (an operator's note).
    const earlier = Array.from({ length: 300 }, (_, i) =>
      JSON.stringify({ record: `${bucket}/1000-${i}`, time: '1000', type: 'topup', note: 'é'.repeat(150) }),
    );
    writeFileSync(file, earlier.join('\n') + '\n');
    // Then a crash mid-line, its length such that the last 64 KiB start inside an 'é'.
    const data = readFileSync(file);
    let cut = 40;
    while ((data[data.length + cut - 65536]! & 0xc0) !== 0x80) cut++;
    appendFileSync(file, Buffer.from(`{"record":"${bucket}/1001-0","note":"${'é'.repeat(100)}`).subarray(0, cut));

    await archiveRecords(h.ctx, dir, Date.now() + 1);
    const lines = readFileSync(file, 'utf8').split('\n').slice(0, -1);
    expect(lines.slice(0, 300)).toEqual(earlier);
    const rest = lines.slice(300).map((l) => JSON.parse(l) as Record<string, string>);
    expect(rest.filter((r) => r.id === h.ctx.ids.hash(id!).hash && r.type === undefined)).toHaveLength(1);
  });

  it('runs one at a time: a run while another holds the lock is refused archive_running, trimming nothing', async () => {
    const [f] = await soldIds(h, TALK, 1);
    await call(f!, 3);
    const cutoff = (await redisTimeMs(h.r)) + 1;
    const before = await exported();
    expect(before.calls!.length).toBeGreaterThan(0);

    // Another run at work (on another machine, say) holds the lock.
    await h.r.set(keys.archiveLock, 'another-run', 'PX', 60_000);
    const dir = join(h.dir, 'archive-locked');
    const refused = await runCliIn(h, 'archive', '--before', String(cutoff), '--out', dir);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/^refused: archive_running: /);
    expect(existsSync(dir)).toBe(false);
    expect(await exported()).toEqual(before);
    expect(await h.r.get(keys.archiveLock)).toBe('another-run');

    // Once it has ended, a run goes through and leaves no lock behind.
    await h.r.del(keys.archiveLock);
    expect((await runCliIn(h, 'archive', '--before', String(cutoff), '--out', dir)).code).toBe(0);
    expect(archived(dir).calls!.length).toBe(before.calls!.length);
    expect(await h.r.exists(keys.archiveLock)).toBe(0);
  });

  it('two runs started together write each record to the files once', async () => {
    const ids = await soldIds(h, TALK, 12);
    for (const id of ids) await call(id, 1);
    const cutoff = (await redisTimeMs(h.r)) + 1;
    const dir = join(h.dir, 'archive-twice');
    const runs = await Promise.all([
      archiveRecords(h.ctx, dir, cutoff).catch((e: Error) => e),
      archiveRecords(h.ctx, dir, cutoff).catch((e: Error) => e),
    ]);
    expect(runs.filter((r) => r instanceof ArchiveRunning)).toHaveLength(1);
    const files = archived(dir);
    for (const k of ['calls', 'sales', 'redemptions'])
      expect(new Set(files[k]!.map((r) => r.record)).size, k).toBe(files[k]!.length);
    expect((await audit()).problems).toEqual([]);
  });

  it("a hand sale refunded after its record was archived keeps the sale's ref on the refund record", async () => {
    const [id] = await mint(h, TALK, 1);
    expect((await activateId(h.ctx, id!, { price: TALK.price, ref: 'invoice-4471' })).ok).toBe(true);
    await sleep(5);
    const run = await runCliIn(h, 'archive', '--before', String(Date.now()), '--out', join(h.dir, 'archive-ref'));
    expect(run.code).toBe(0);
    const refund = await refundSale(h.ctx, new HttpProvider(h.cfg.provider.url!, 2000), id!, 'late', 'test');
    expect(refund).toMatchObject({ ok: true, provider: 'not_paid_through_a_provider' });
    // The refund's ref is the sale's (docs/sales.md): how the refund is matched to a sale by hand.
    const rec = (await exported()).sales!.find((r) => r.type === 'refund' && r.reason === 'late');
    expect(rec).toMatchObject({ ref: 'invoice-4471' });
    expect((await audit()).problems).toEqual([]);
  });

  it('sale lookup of an ID whose sale and refund were archived says where they are, and the void', async () => {
    const [id] = await soldIds(h, TALK, 1);
    expect(await refundSale(h.ctx, new HttpProvider(h.cfg.provider.url!, 2000), id!, 'gone', 'test')).toMatchObject({
      ok: true,
    });
    const before = await lookupSale(h.ctx, id!);
    if (!before.ok) throw new Error(before.reason);
    await sleep(5);
    expect(
      (await runCliIn(h, 'archive', '--before', String(Date.now()), '--out', join(h.dir, 'archive-lookup'))).code,
    ).toBe(0);
    const after = await lookupSale(h.ctx, id!);
    if (!after.ok) throw new Error(after.reason);
    const { bucket } = h.ctx.ids.hash(id!);
    expect(after.sale).toEqual({
      record: before.sale!.record,
      id: before.sale!.id,
      archived: `sales/b${bucket}.ndjson`,
    });
    expect(after.refund).toMatchObject({ record: before.refund!.record, void: 'not_paid_through_a_provider' });
  });

  it('refuses a missing or malformed age (exit 2), trimming nothing', async () => {
    const dir = join(h.dir, 'archive-bad');
    expect((await runCliIn(h, 'archive', '--out', dir)).code).toBe(2);
    expect((await runCliIn(h, 'archive', '--older-than', '90', '--out', dir)).code).toBe(2);
    expect((await runCliIn(h, 'archive', '--older-than', '90d')).code).toBe(2);
    expect(existsSync(dir)).toBe(false);
  });
});
