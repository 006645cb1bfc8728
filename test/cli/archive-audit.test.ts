/**
 * `tessera audit --archive DIR`: the archive files hold what the checkpoints
 * sum. Records of every kind and sum (sales, calls, redemptions and a
 * reversal, a refund, a top-up, an expiry) are archived and trimmed once;
 * each test checks a copy of that archive, whole or damaged as an accident or
 * a hand would damage it, against the same checkpoints.
 */
import { appendFileSync, cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ArchiveReport } from '../../src/ledger/archive-check';
import type { AuditReport } from '../../src/ledger/audit';
import { archiveRecords } from '../../src/ledger/retention';
import { expireId } from '../../src/ledger/scripts';
import { redisTimeMs } from '../../src/redis/clock';
import { keys } from '../../src/redis/keys';
import { refundSale } from '../../src/sales/admin';
import { HttpProvider } from '../../src/sales/provider';
import type { Gateway } from '../../src/gateway/server';
import { lines, runCliIn } from '../support/cli';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, uniq, type Harness } from '../support/harness';
import { jsonCall } from '../support/http';
import { bucketOf, hashOf, idKeyOf } from '../support/redis';
import { sleep } from '../support/wait';
import { type Client } from '../support/ws-client';
import { connectSwitch, newCall } from '../metering/fixtures';
import { loadRedemptionCatalog, scannerToken } from '../redemption/fixtures';

let h: Harness;
let gw: Gateway;
let sw: Client;
const TALK = talkProduct({ name: 'talk-archive-audit', face: 1_000_000, price: 1_000_000 });
const DEST = '4912345'; // plan std: 100 micro-units a second
/** The archive as `tessera archive` wrote it: tests check copies of it. */
let base: string;
/** IDs with a call (a, b), a top-up (b), a refund, an expiry (spent) and redemptions with a reversal (wallet). */
let a: string, b: string, refunded: string, spent: string, wallet: string;

async function call(id: string, sec: number): Promise<void> {
  const c = newCall('arca');
  expect(await sw.request({ op: 'start', ref: uniq('r'), call: c, id, dest: DEST })).toMatchObject({ op: 'started' });
  expect(await sw.request({ op: 'stop', ref: uniq('r'), call: c, sec })).toMatchObject({ op: 'stopped' });
}

/** Redis' clock (ms), plus one: a cut-off after everything written so far. */
async function cutoff(): Promise<number> {
  return (await redisTimeMs(h.r)) + 1;
}

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  const cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  ({ c: sw } = await connectSwitch(h, gw.port));
  const { tok } = await scannerToken(h);

  [a, b, refunded, spent] = (await soldIds(h, TALK, 4)) as [string, string, string, string];
  [wallet] = (await soldIds(h, cat.wallet)) as [string];
  await call(a, 10);
  await call(b, 5);
  expect((await runCliIn(h, 'topup', b, '--amount', '5000')).code).toBe(0);
  expect((await refundSale(h.ctx, new HttpProvider(h.cfg.provider.url!, 2000), refunded, 'test', 'test')).ok).toBe(
    true,
  );
  await call(spent, 3);
  await h.r.hset(idKeyOf(h, spent), 'exp', String((await cutoff()) - 1000));
  expect(await expireId(h.ctx.scripts, bucketOf(h, spent), hashOf(h, spent), 0)).toMatchObject({ forfeited: true });
  const redeem = async (item: string): Promise<string> => {
    const scan = uniq();
    expect((await jsonCall(gw, 'POST', '/v1/redeem', { token: tok, body: { scan, id: wallet, item } })).status).toBe(
      200,
    );
    return scan;
  };
  await redeem('beer');
  const water = await redeem('water');
  expect((await jsonCall(gw, 'POST', '/v1/reverse', { token: tok, body: { scan: water } })).status).toBe(200);

  const before = await cutoff();
  await sleep(5); // what follows is written in a later millisecond, and stays in Redis
  await call(a, 3);
  base = join(h.dir, 'archive');
  expect((await runCliIn(h, 'archive', '--before', String(before), '--out', base)).code).toBe(0);
});
afterAll(async () => {
  await sw?.close();
  await gw?.close();
  await h?.stop();
});

/** A copy of the archive, to damage. */
function copy(name: string): string {
  const dir = join(h.dir, name);
  cpSync(base, dir, { recursive: true });
  return dir;
}

/** The file that holds an ID's records of one kind, and the index of the first line about it matching `also`. */
function lineOf(dir: string, kind: string, id: string, also = ''): { file: string; rows: string[]; i: number } {
  const file = join(dir, kind, `b${bucketOf(h, id)}.ndjson`);
  const rows = lines(readFileSync(file, 'utf8'));
  const i = rows.findIndex((l) => l.includes(`"id":"${hashOf(h, id)}"`) && l.includes(also));
  expect(i).toBeGreaterThanOrEqual(0);
  return { file, rows, i };
}

const rewrite = (file: string, rows: string[]): void => writeFileSync(file, rows.map((l) => l + '\n').join(''));

async function check(dir: string): Promise<{ code: number; r: AuditReport & { archive: ArchiveReport; ok: boolean } }> {
  const run = await runCliIn(h, 'audit', '--json', '--archive', dir);
  return { code: run.code, r: JSON.parse(run.out) as AuditReport & { archive: ArchiveReport; ok: boolean } };
}

/** The one ID problem the check should find: its archived sums against its checkpoint. */
const differs = (id: string, sum: string, archived: number, checkpoint: number) =>
  expect.objectContaining({
    bucket: bucketOf(h, id),
    id: hashOf(h, id),
    problem: 'its archived records do not add up to its checkpoint',
    archived: expect.objectContaining({ [sum]: archived }),
    checkpoint: expect.objectContaining({ [sum]: checkpoint }),
  });

describe('tessera audit --archive', () => {
  it('passes a whole archive: every checkpointed ID is what its archived records add up to', async () => {
    const { code, r } = await check(base);
    expect(r.archive.problems).toEqual([]);
    expect(r.problems).toEqual([]);
    expect(code).toBe(0);
    expect(r.ok).toBe(true);
    // Every record archived was counted: sales (5 sales, a refund, a top-up, an expiry), 3 calls, 3 redemptions.
    expect(r.archive).toMatchObject({ records: 8 + 3 + 3, inRedis: 0, ids: 5 });
    // Of every kind of sum, the expiry's too.
    const ckpt = await h.r.hget(keys.checkpoint(bucketOf(h, spent)), hashOf(h, spent));
    expect(ckpt!.split(' ')[7]).toBe(String(1_000_000 - 300));
    const text = await runCliIn(h, 'audit', '--archive', base);
    expect(text.code).toBe(0);
    expect(text.out).toContain(`archive ${base}: `);
    expect(text.out).toContain('archive: ok, every checkpoint is what its archived records add up to');
    expect((await runCliIn(h, 'help', 'audit')).out).toContain('[--archive DIR]');
  });

  it('reports the IDs of a deleted file', async () => {
    const dir = copy('deleted');
    rmSync(join(dir, 'calls', `b${bucketOf(h, a)}.ndjson`));
    const { code, r } = await check(dir);
    expect(code).toBe(1);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([]); // Redis itself balances: only the archive lost records
    expect(r.archive.problems).toContainEqual(differs(a, 'calls', 0, 1000));
  });

  it('reports a removed line as its ID, and an ID with no record left as such', async () => {
    const dir = copy('removed');
    const c = lineOf(dir, 'calls', b);
    rewrite(
      c.file,
      c.rows.filter((_, i) => i !== c.i),
    );
    const s = lineOf(dir, 'sales', refunded, '"type":"refund"');
    const sale = lineOf(dir, 'sales', refunded, '"face"');
    rewrite(
      s.file,
      s.rows.filter((_, i) => i !== s.i && i !== sale.i),
    );
    const { code, r } = await check(dir);
    expect(code).toBe(1);
    expect(r.archive.problems).toContainEqual(differs(b, 'calls', 0, 500));
    expect(r.archive.problems).toContainEqual(
      expect.objectContaining({ id: hashOf(h, refunded), problem: 'checkpointed, but no record of it archived' }),
    );
  });

  it('reports an edited amount, an expiry record too', async () => {
    const dir = copy('edited');
    const e = lineOf(dir, 'sales', spent, '"type":"expiry"');
    e.rows[e.i] = e.rows[e.i]!.replace(`"amount":"${1_000_000 - 300}"`, '"amount":"1"');
    rewrite(e.file, e.rows);
    const { code, r } = await check(dir);
    expect(code).toBe(1);
    expect(r.archive.problems).toEqual([differs(spent, 'expired', 1, 1_000_000 - 300)]);
    const text = await runCliIn(h, 'audit', '--archive', dir);
    expect(text.code).toBe(1);
    expect(text.out).toContain(
      `  bucket ${bucketOf(h, spent)} id ${hashOf(h, spent)}: its archived records do not add up to its checkpoint; expired archived 1, checkpoint ${1_000_000 - 300}\n`,
    );
    expect(text.out).toContain('archive: 1 problem(s)');
  });

  it('reports a duplicated line by its record and line, and its ID', async () => {
    const dir = copy('duplicated');
    const d = lineOf(dir, 'redemptions', wallet, '"item":"beer"');
    rewrite(d.file, [...d.rows.slice(0, d.i + 1), ...d.rows.slice(d.i)]);
    const record = (JSON.parse(d.rows[d.i]!) as { record: string }).record;
    const { code, r } = await check(dir);
    expect(code).toBe(1);
    expect(r.archive.problems).toContainEqual({
      bucket: bucketOf(h, wallet),
      file: `redemptions/b${bucketOf(h, wallet)}.ndjson`,
      line: d.i + 2,
      problem: `record ${record} twice`,
    });
    expect(r.archive.problems).toContainEqual(expect.objectContaining({ id: hashOf(h, wallet) }));
  });

  it('reports a line that is no record, one of another bucket, and a file of no bucket', async () => {
    const dir = copy('foreign');
    const c = lineOf(dir, 'calls', a);
    const other = (bucketOf(h, a) + 1) % h.cfg.buckets;
    const moved = c.rows[c.i]!.replace(`"record":"${bucketOf(h, a)}/`, `"record":"${other}/`);
    appendFileSync(c.file, 'not json\n' + moved + '\n');
    writeFileSync(join(dir, 'calls', `b${h.cfg.buckets}.ndjson`), '');
    const { code, r } = await check(dir);
    expect(code).toBe(1);
    const file = `calls/b${bucketOf(h, a)}.ndjson`;
    expect(r.archive.problems).toEqual(
      expect.arrayContaining([
        { file: `calls/b${h.cfg.buckets}.ndjson`, problem: `no bucket of ${h.cfg.buckets} has this file` },
        { bucket: bucketOf(h, a), file, line: c.rows.length + 1, problem: 'not a record: not JSON' },
        expect.objectContaining({ file, line: c.rows.length + 2, problem: expect.stringMatching(/another bucket$/) }),
      ]),
    );
  });

  it('passes records still in Redis after a run stopped before its trim, but not one changed in the file', async () => {
    const dir = copy('crashed');
    // The call made after the first run's cut-off is written to the file, fsynced, and the run dies at its trim.
    const run = h.ctx.scripts.run.bind(h.ctx.scripts);
    const spy = vi.spyOn(h.ctx.scripts, 'run').mockImplementation((name, ...rest) => {
      if (name === 'trim') return Promise.reject(new Error('killed'));
      return run(name, ...rest);
    });
    try {
      await expect(archiveRecords(h.ctx, dir, await cutoff())).rejects.toThrow('killed');
    } finally {
      spy.mockRestore();
    }
    const c = lineOf(dir, 'calls', a, '"sec":"3"');
    expect(c.i).toBe(c.rows.length - 1);
    // And a second run died mid-line.
    appendFileSync(c.file, '{"record":"0/17');
    const { code, r } = await check(dir);
    expect(r.archive.problems).toEqual([]);
    expect(code).toBe(0);
    expect(r.archive).toMatchObject({ records: 8 + 3 + 3, inRedis: 1 });

    // Not in the checkpoint yet, it must be as Redis holds it.
    rewrite(
      c.file,
      c.rows.map((l, i) => (i === c.i ? l.replace('"sec":"3"', '"sec":"2"') : l)),
    );
    const record = (JSON.parse(c.rows[c.i]!) as { record: string }).record;
    const changed = await check(dir);
    expect(changed.code).toBe(1);
    expect(changed.r.archive.problems).toEqual([
      expect.objectContaining({ line: c.i + 1, problem: `record ${record} is not as Redis holds it` }),
    ]);
  });

  it('waits for no archive run: one at work refuses it archive_running', async () => {
    await h.r.set(keys.archiveLock, 'another-run', 'PX', 60_000);
    try {
      const run = await runCliIn(h, 'audit', '--archive', base);
      expect(run.code).toBe(1);
      expect(run.err).toMatch(/^refused: archive_running: /);
    } finally {
      await h.r.del(keys.archiveLock);
    }
  });

  it('says so when DIR is not there', async () => {
    const run = await runCliIn(h, 'audit', '--archive', join(h.dir, 'nowhere'));
    expect(run.code).toBe(1);
    expect(run.err).toContain('no archive directory at');
    expect(readdirSync(h.dir)).not.toContain('nowhere');
  });
});
