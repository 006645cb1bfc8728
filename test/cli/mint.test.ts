/**
 * `tessera mint` when Redis stops answering: each script call is retried with
 * the very same IDs and sealed numbers (a retry whose first try landed writes
 * nothing twice), and a mint that stops anyway leaves the output file holding
 * exactly the IDs Redis holds, and says how many and how to go on.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateId } from '../../src/ids/idnum';
import { mintInto } from '../../src/ledger/scripts';
import { productTerms } from '../../src/catalog/terms';
import { keys } from '../../src/redis/keys';
import { cli, cliEnv, harnessFile, lines, runCliIn, setEnv } from '../support/cli';
import { seedCatalog, startHarness, talkProduct, type Harness } from '../support/harness';
import { until } from '../support/wait';

let h: Harness;
const P = talkProduct({ name: 'mint-pause' });
const Q = talkProduct({ name: 'mint-retry' });
const R = talkProduct({ name: 'mint-pipe' });
const S = talkProduct({ name: 'mint-slow' });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [P, Q, R, S]);
});
afterAll(async () => {
  await h?.r.call('CLIENT', 'UNPAUSE');
  await h?.stop();
});

/** The ID hashes in a product's inventory, over every bucket. */
async function inventory(product: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (let b = 0; b < h.cfg.buckets; b++)
    for (const hash of await h.r.smembers(keys.inventory(b, product))) out.add(keys.id(b, hash));
  return out;
}

async function idKeysOf(product: string): Promise<Set<string>> {
  const out = new Set<string>();
  let cursor = '0';
  do {
    const [next, found] = await h.r.scan(cursor, 'MATCH', 'ts:{b*}:id:*', 'COUNT', 5000);
    cursor = next;
    for (const key of found) if ((await h.r.hget(key, 'prod')) === product) out.add(key);
  } while (cursor !== '0');
  return out;
}

describe('mint', () => {
  it('--out creates a new file and never overwrites one, /dev/null included: refused before minting', async () => {
    const existing = harnessFile(h, 'already-there.txt', 'keep me\n');
    const before = (await inventory(Q.name)).size;
    for (const path of ['/dev/null', existing]) {
      const r = await runCliIn(h, 'mint', '--product', Q.name, '--count', '3', '--out', path);
      expect(r.code, path).toBe(1);
      expect(r.err, path).toContain('EEXIST');
    }
    expect(readFileSync(existing, 'utf8')).toBe('keep me\n');
    expect((await inventory(Q.name)).size).toBe(before);
    const fresh = join(h.dir, 'mint-retry-batch-1.txt');
    expect((await runCliIn(h, 'mint', '--product', Q.name, '--count', '3', '--out', fresh)).code).toBe(0);
    expect(lines(readFileSync(fresh, 'utf8'))).toHaveLength(3);
    expect((await inventory(Q.name)).size).toBe(before + 3);
  });

  it('a script call sent again after its reply was lost writes nothing twice and reports no clash', async () => {
    const ids = Array.from({ length: 20 }, () => generateId(16));
    const bucket = 3;
    const batch = ids.map((id) => ({ key: keys.id(bucket, h.ctx.ids.hash(id).hash), sealed: h.ctx.ids.seal(id) }));
    const terms = productTerms(Q);
    // The test before minted this product too, maybe into this bucket.
    const stocked = await h.r.scard(keys.inventory(bucket, Q.name));
    expect([...(await mintInto(h.ctx.scripts, bucket, Q.name, terms, batch))]).toEqual([]);
    const first = await h.r.hgetall(batch[0]!.key);
    // The retry: the same keys and the same sealed numbers. Every ID is already there, from this very call.
    expect([...(await mintInto(h.ctx.scripts, bucket, Q.name, terms, batch))]).toEqual([]);
    expect(await h.r.hgetall(batch[0]!.key)).toEqual(first);
    expect(await h.r.scard(keys.inventory(bucket, Q.name))).toBe(stocked + 20);
    // Another mint that drew the same number seals it afresh: a real clash, minted again elsewhere.
    const again = [{ key: batch[5]!.key, sealed: h.ctx.ids.seal(ids[5]!) }];
    expect([...(await mintInto(h.ctx.scripts, bucket, Q.name, terms, again))]).toEqual([0]);
    expect(await h.r.hget(batch[5]!.key, 'seal')).toBe(batch[5]!.sealed);
  });

  it('a mint that Redis stops answering midway stops, and the file holds exactly the IDs Redis holds', async () => {
    const out = join(h.dir, 'paused.txt');
    const count = 300_000;
    // A short command timeout, and writes paused for longer than all of a call's retries.
    const restore = setEnv(cliEnv(h, { REDIS_TIMEOUT_MS: '50' }));
    let run: ReturnType<typeof cli>;
    try {
      run = cli('mint', '--product', P.name, '--count', String(count), '--out', out);
      await until(async () => (await h.r.dbsize()) > 3000, 60_000, 20, 'first IDs minted');
      await h.r.call('CLIENT', 'PAUSE', '6000', 'WRITE');
      const r = await run;
      expect(r.code).toBe(1);
      const minted = Number(/minted (\d+) of 300000 ID\(s\) of mint-pause into /.exec(r.err)?.[1]);
      expect(r.err).toContain('mint stopped: ');
      expect(r.err).toContain('the file holds exactly the IDs Redis holds');
      expect(r.err).toContain(
        `to mint the other ${count - minted}: tessera mint --product mint-pause --count ${count - minted} --out ANOTHER_FILE`,
      );
      expect(minted).toBeGreaterThan(0);
      expect(minted).toBeLessThan(count);

      const ids = lines(readFileSync(out, 'utf8'));
      expect(ids).toHaveLength(minted);
      const fromFile = new Set(ids.map((id) => keys.id(h.ctx.ids.hash(id).bucket, h.ctx.ids.hash(id).hash)));
      expect(fromFile.size).toBe(minted);
      // The pause is over by now: whatever was queued behind it has run.
      await h.r.call('CLIENT', 'UNPAUSE');
      const inRedis = await idKeysOf(P.name);
      expect(inRedis.size).toBe(minted);
      expect([...inRedis].filter((k) => !fromFile.has(k))).toEqual([]);
      expect(await inventory(P.name)).toEqual(inRedis);
    } finally {
      restore();
      await h.r.call('CLIENT', 'UNPAUSE');
    }
  }, 120_000);

  it('printing to a slow reader (| tee, ssh) hands it every ID before the process exits', async () => {
    const root = resolve(__dirname, '..', '..');
    const count = 20_000;
    const child = spawn(
      join(root, 'node_modules', '.bin', 'tsx'),
      [join(root, 'src', 'cli', 'main.ts'), 'mint', '--product', S.name, '--count', String(count)],
      { cwd: root, env: { ...process.env, ...cliEnv(h) }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    // The reader falls behind: it takes nothing until the mint says it is done.
    child.stdout.pause();
    await until(() => err.includes(`minted ${count} ID(s)`), 60_000);
    child.stdout.resume();
    expect(await new Promise<number | null>((r) => child.once('close', r))).toBe(0);
    const ids = lines(out);
    expect(ids).toHaveLength(count);
    expect(new Set(ids.map((id) => keys.id(h.ctx.ids.hash(id).bucket, h.ctx.ids.hash(id).hash)))).toEqual(
      await inventory(S.name),
    );
  }, 120_000);

  it('printing to a reader that goes away (| head) stops the mint and says so, without a stack trace', async () => {
    const root = resolve(__dirname, '..', '..');
    const child = spawn(
      join(root, 'node_modules', '.bin', 'tsx'),
      [join(root, 'src', 'cli', 'main.ts'), 'mint', '--product', R.name, '--count', '2000000'],
      { cwd: root, env: { ...process.env, ...cliEnv(h) }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // Read the first IDs, then hang up, as `head -2` does.
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.stdout.destroy();
    const code = await new Promise<number | null>((r) => child.once('close', r));
    expect({ code, err }).toMatchObject({
      code: 1,
      err: expect.stringContaining('mint stopped: output closed (EPIPE)'),
    });
    expect(err).not.toMatch(/\n\s+at /);
    const minted = Number(
      /minted (\d+) of 2000000 ID\(s\) of mint-pipe: every one is in Redis' inventory/.exec(err)?.[1],
    );
    expect(minted).toBeGreaterThan(0);
    expect(minted).toBeLessThan(2_000_000);
    expect((await inventory(R.name)).size).toBe(minted);
  }, 120_000);
});
