/**
 * The operator CLI, run in-process through runCli against the harness Redis:
 * same secret, same bucket count, so the gateway and the test see what it writes.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putPlans, readCatalog } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { checkId, generateId } from '../../src/ids/idnum';
import { keys } from '../../src/redis/keys';
import { messageOf } from '../../src/protocol/reasons';
import { cli, cliEnv, harnessFile, lines, setEnv, type CliRun } from '../support/cli';
import { gateway, seedCatalog, soldIds, startHarness, talkProduct, token, type Harness } from '../support/harness';
import { idFields } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Client } from '../support/ws-client';

let h: Harness;
let gw: Gateway;
let restoreEnv: (() => void) | undefined;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  gw = await gateway(h);
  restoreEnv = setEnv(cliEnv(h));
});
afterAll(async () => {
  restoreEnv?.();
  await gw?.close();
  await h?.stop();
});

const file = (name: string, text: string): string => harnessFile(h, name, text);

/** All ID hashes in Redis of one product, with their state. */
async function idsInRedis(product: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, found] = await h.r.scan(cursor, 'MATCH', 'ts:{b*}:id:*', 'COUNT', 1000);
    cursor = next;
    for (const key of found) {
      const [st, prod] = await h.r.hmget(key, 'st', 'prod');
      if (prod === product) out.set(key, st ?? '');
    }
  } while (cursor !== '0');
  return out;
}

async function inventorySize(product: string): Promise<number> {
  let n = 0;
  for (let b = 0; b < h.cfg.buckets; b++) n += await h.r.scard(keys.inventory(b, product));
  return n;
}

/** Mints n IDs of a product through the CLI and returns them. */
async function cliMint(product: string, n: number): Promise<string[]> {
  const r = await cli('mint', '--product', product, '--count', String(n));
  expect(r.code).toBe(0);
  return lines(r.out);
}

describe('catalog-load', () => {
  it('loads plans from CSV and products from JSON', async () => {
    const plans = file(
      'rates.csv',
      ['# plan,prefix,rate,fee', 'plan,prefix,rate,fee', 'cplan,,80,', 'cplan,33,150,2000', 'cplan,336,900,0', ''].join(
        '\n',
      ),
    );
    const products = file(
      'products.json',
      JSON.stringify([
        {
          name: 'ctalk',
          kind: 'talk',
          currency: 'USD',
          face: 2_000_000,
          price: 1_800_000,
          plan: 'cplan',
          thresholds: [60, 10],
          expiryDays: 30,
          maxCalls: 2,
        },
      ]),
    );
    const r = await cli('catalog-load', '--plans', plans, '--products', products);
    expect(r).toEqual({ code: 0, out: 'loaded 1 rate plan(s)\nloaded 1 product(s)\n', err: '' });
    const cat = await readCatalog(h.r);
    expect(cat.plans.get('cplan')).toEqual({
      name: 'cplan',
      rates: [
        { prefix: '', rate: 80, fee: 0 },
        { prefix: '33', rate: 150, fee: 2000 },
        { prefix: '336', rate: 900, fee: 0 },
      ],
    });
    expect(cat.products.get('ctalk')).toEqual({
      name: 'ctalk',
      kind: 'talk',
      currency: 'USD',
      face: 2_000_000,
      price: 1_800_000,
      plan: 'cplan',
      thresholds: [60, 10],
      expiryDays: 30,
      maxCalls: 2,
    });
  });

  it('loads plans from JSON and products from CSV; the running gateway meters with them at once', async () => {
    const plans = file(
      'rates.json',
      JSON.stringify({
        plans: [
          {
            name: 'jplan',
            rates: [
              { prefix: '1', rate: 40 },
              { prefix: '1800', rate: 1, fee: 0 },
            ],
          },
        ],
      }),
    );
    const products = file(
      'products.csv',
      'name,kind,currency,face,price,plan,thresholds,expiryDays,maxCalls,title\njtalk,talk,EUR,400000,400000,jplan,120;30,,,Forty cents\n',
    );
    const r = await cli('catalog-load', '--products', products, '--plans', plans);
    expect(r.code).toBe(0);
    expect(lines(r.out)).toEqual(['loaded 1 rate plan(s)', 'loaded 1 product(s)']);
    const cat = await readCatalog(h.r);
    expect(cat.products.get('jtalk')).toEqual({
      name: 'jtalk',
      kind: 'talk',
      title: 'Forty cents',
      currency: 'EUR',
      face: 400_000,
      price: 400_000,
      plan: 'jplan',
      thresholds: [120, 30],
      expiryDays: 180,
      maxCalls: 1,
    });

    const [id] = (await cliMint('jtalk', 1)) as [string];
    expect((await cli('activate', id)).code).toBe(0);
    const c = await Client.connect(gw.port, await token(h));
    const s = await c.request({ op: 'start', ref: 1, call: 'jt-1', id, dest: '12125550100' });
    expect(s).toMatchObject({ op: 'started', maxSec: 10_000, balance: 400_000, rate: 40, fee: 0 });
    await c.request({ op: 'stop', ref: 2, call: 'jt-1', sec: 0 });
    await c.close();
  });

  it('loads a talk product whose rate plan is not loaded, and warns that its calls are no_rate until it is', async () => {
    const products = file(
      'noplan.json',
      JSON.stringify([{ name: 'c-noplan', kind: 'talk', currency: 'EUR', face: 1, price: 1, plan: 'noplan' }]),
    );
    const r = await cli('catalog-load', '--products', products);
    expect(r).toEqual({
      code: 0,
      out: 'loaded 1 product(s)\n',
      err: 'warning: product c-noplan: rate plan noplan is not loaded; its calls are refused no_rate until it is\n',
    });
  });

  it('warns when expiringDays can never fire: a ticket that never expires (validUntil is no expiry)', async () => {
    const ticket = { kind: 'entry', currency: 'EUR', price: 1, entries: 1, venues: ['arena'], expiringDays: 7 };
    const products = file(
      'expiring.json',
      JSON.stringify([
        { ...ticket, name: 'c-no-expiry', validUntil: '2027-06-30T23:59:59+02:00' },
        { ...ticket, name: 'c-expiry', expiryDays: 30 },
      ]),
    );
    const r = await cli('catalog-load', '--products', products);
    expect(r).toEqual({
      code: 0,
      out: 'loaded 2 product(s)\n',
      err:
        'warning: product c-no-expiry: expiringDays has no effect: its IDs have no expiryDays, so never expire' +
        " (a ticket's validUntil is not an expiry)\n",
    });
  });

  it('warns when a card of several lines reserves all that is free per call: its second line never gets a start', async () => {
    // maxCalls 2 with grantSec 0 loaded silently; every second call was then refused insufficient_balance.
    const talk = { kind: 'talk', currency: 'EUR', face: 5000, price: 5000, plan: 'std' };
    const products = file(
      'lines.json',
      JSON.stringify([
        { ...talk, name: 'c-duo-all', maxCalls: 2, grantSec: 0 },
        { ...talk, name: 'c-duo', maxCalls: 2 },
        { ...talk, name: 'c-one-all', maxCalls: 1, grantSec: 0 },
      ]),
    );
    const r = await cli('catalog-load', '--products', products);
    expect(r).toEqual({
      code: 0,
      out: 'loaded 3 product(s)\n',
      err:
        'warning: product c-duo-all: maxCalls 2 with grantSec 0: a call reserves all that is free, so while one' +
        ' is live every other start is refused insufficient_balance; give grantSec (seconds a call reserves at a time)\n',
    });
  });

  it('warns when every top-up would send expiring again: expiringDays not below the days a top-up extends to', async () => {
    const talk = { kind: 'talk', currency: 'EUR', face: 5000, price: 5000, plan: 'std', expiryDays: 30 };
    const products = file(
      'topup-expiring.json',
      JSON.stringify([
        { ...talk, name: 'c-renotify', expiringDays: 30 },
        { ...talk, name: 'c-quiet', expiringDays: 29 },
        { ...talk, name: 'c-no-topup', expiringDays: 30, topup: false },
        { ...talk, name: 'c-keeps-expiry', expiringDays: 30, topupExtendsDays: 0 },
      ]),
    );
    const r = await cli('catalog-load', '--products', products);
    expect(r).toMatchObject({ code: 0, out: 'loaded 4 product(s)\n' });
    expect(r.err.split('\n').filter((l) => l.includes('expiring'))).toEqual([
      'warning: product c-renotify: expiringDays 30 is not below the 30 days a top-up extends the expiry to: every top-up sends expiring again',
    ]);
  });

  it('refuses a talk product whose top-up cap is below its face: no top-up of it could succeed', async () => {
    const capped = file(
      'capped.json',
      JSON.stringify([
        {
          name: 'c-capped',
          kind: 'talk',
          currency: 'EUR',
          face: 5000,
          price: 5000,
          plan: 'cplan',
          topupMaxBalance: 4000,
        },
      ]),
    );
    const r = await cli('catalog-load', '--products', capped);
    expect(r).toMatchObject({
      code: 1,
      err: 'refused: bad_catalog_entry: product #1: topupMaxBalance 4000 is below face 5000\n',
    });
    expect(await h.r.hget(keys.products, 'c-capped')).toBeNull();
  });

  it('refuses an invalid file with a message and exit code 1, loading nothing of it', async () => {
    const before = await h.r.get(keys.catalogVersion);
    const dup = file('dup.csv', 'plan,prefix,rate,fee\nbad,44,200,0\nbad,44,300,0\n');
    const r = await cli('catalog-load', '--plans', dup);
    expect(r.code).toBe(1);
    expect(r.err).toBe("refused: duplicate_entry: rate plan bad: prefix '44' appears twice\n");
    const neg = file('neg.json', JSON.stringify([{ name: 'neg', rates: [{ prefix: '1', rate: -3 }] }]));
    const r2 = await cli('catalog-load', '--plans', neg);
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(/^refused: bad_catalog_entry: rate plan neg: prefix '1': rate must be >= 1/);
    expect(await h.r.hget(keys.plans, 'bad')).toBeNull();
    expect(await h.r.hget(keys.plans, 'neg')).toBeNull();
    expect(await h.r.get(keys.catalogVersion)).toBe(before);
  });

  it('a bad cell of a long CSV price list is named by its plan and prefix, not by its place in the plan', async () => {
    // 'rates.3' of 'rate plan #2' sent the operator counting rows of the second plan, from 0.
    const rows = ['plan,prefix,rate,fee', 'cc-a,33,40,0', 'cc-b,33,40,0', 'cc-b,34,50,0', 'cc-b,351,80,0'];
    const csv = file('list.csv', [...rows, 'cc-b,44,0.019,0', 'cc-b,49,40,0'].join('\n'));
    const r = await cli('catalog-load', '--plans', csv);
    expect(r.code).toBe(1);
    expect(r.err).toBe("refused: bad_catalog_entry: rate plan cc-b: prefix '44': rate must be integer\n");
    const missing = file('missing.csv', [...rows, 'cc-b,44,,0'].join('\n'));
    expect((await cli('catalog-load', '--plans', missing)).err).toBe(
      "refused: bad_catalog_entry: rate plan cc-b: prefix '44': must have required property 'rate'\n",
    );
    // Neither a plan's name nor a prefix is trusted before it is valid: the place names it then.
    const badName = file('name.json', JSON.stringify([{ name: 'X 1', rates: [{ prefix: '+33', rate: 40 }] }]));
    expect((await cli('catalog-load', '--plans', badName)).err).toMatch(
      /^refused: bad_catalog_entry: rate plan #1: name /,
    );
    const badPrefix = file('prefix.csv', 'plan,prefix,rate\ncc-c,+33,40\n');
    expect((await cli('catalog-load', '--plans', badPrefix)).err).toMatch(
      /^refused: bad_catalog_entry: rate plan cc-c: rates\.0\.prefix must match pattern/,
    );
    expect(await h.r.hget(keys.plans, 'cc-b')).toBeNull();
  });

  it('names each refusal by its reason, on stderr and with --json on stdout, beside the exact problem', async () => {
    const refusal = async (
      args: string[],
    ): Promise<{ code: number; err: string; json: { ok: boolean; reason: string; message: string } }> => {
      const r = await cli('catalog-load', ...args, '--json');
      return { code: r.code, err: r.err, json: JSON.parse(r.out) as { ok: boolean; reason: string; message: string } };
    };
    const at = Date.now() + 86_400_000;
    const versions = Array.from({ length: 17 }, (_, i) => ({
      name: 'c-many',
      activeFrom: at + i * 1000,
      rates: [{ prefix: '', rate: 1, fee: 0 }],
    }));
    const cases: [string[], string, RegExp][] = [
      [['--plans', join(h.dir, 'absent.csv')], 'file_unreadable', /^ENOENT: .*absent\.csv/],
      [['--plans', file('broken.json', '[{"name": "x",')], 'bad_catalog_file', /is not valid JSON/],
      [['--plans', file('noplan.csv', 'plan,prefix,rate\n,33,5\n')], 'bad_catalog_file', /a row without a plan$/],
      [
        ['--plans', file('neg2.json', JSON.stringify([{ name: 'c-neg', rates: [{ prefix: '1', rate: -3 }] }]))],
        'bad_catalog_entry',
        /^rate plan c-neg: prefix '1': rate must be >= 1/,
      ],
      [
        [
          '--plans',
          file(
            'tz.json',
            JSON.stringify([{ name: 'c-tz', tz: 'Mars/Base', rates: [{ prefix: '', rate: 1, fee: 0 }] }]),
          ),
        ],
        'bad_catalog_entry',
        /unknown time zone 'Mars\/Base'/,
      ],
      [
        ['--plans', file('dup2.csv', 'plan,prefix,rate,fee\nc-dup,44,200,0\nc-dup,44,300,0\n')],
        'duplicate_entry',
        /prefix '44' appears twice$/,
      ],
      [
        [
          '--products',
          file('twice.json', JSON.stringify([talkProduct({ name: 'c-twice' }), talkProduct({ name: 'c-twice' })])),
        ],
        'duplicate_entry',
        /the product c-twice is given twice/,
      ],
      [
        ['--plans', file('many.json', JSON.stringify(versions))],
        'too_many_versions',
        /^rate plan c-many: more than 16 versions to come$/,
      ],
    ];
    for (const [args, reason, message] of cases) {
      const r = await refusal(args);
      expect(r.code, reason).toBe(1);
      expect(r.json).toMatchObject({ ok: false, reason, loaded: {}, warnings: [] });
      expect(r.json.message).toMatch(message);
      // The human line keeps the exact problem, after the reason as every command says one.
      expect(r.err).toBe(`refused: ${reason}: ${r.json.message}\n`);
    }
    expect((await readCatalog(h.r)).plans.has('c-many')).toBe(false);
    // Loaded: what was loaded, by kind, and the warnings, in one line of JSON.
    const ok = await cli(
      'catalog-load',
      '--plans',
      file('ok.csv', 'plan,prefix,rate,fee\nc-json,,5,0\n'),
      '--products',
      file('ok.json', JSON.stringify([talkProduct({ name: 'c-json', plan: 'c-json-none' })])),
      '--json',
    );
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.out)).toEqual({
      ok: true,
      loaded: { plans: 1, products: 1 },
      warnings: ['product c-json: rate plan c-json-none is not loaded; its calls are refused no_rate until it is'],
    });
  });

  it('without --products, --plans or --items: usage error, exit 2', async () => {
    const r = await cli('catalog-load');
    expect(r.code).toBe(2);
    expect(r.err).toContain('give --products, --plans and/or --items');
  });
});

describe('mint', () => {
  it('mint --count 1000 --out FILE: 1000 distinct valid IDs, file mode 0600, 1000 minted ID hashes and inventory entries', async () => {
    await cli('catalog-load', '--products', file('k.json', JSON.stringify([talkProduct({ name: 'cli1k' })])));
    const out = join(h.dir, 'ids-1k.txt');
    const r = await cli('mint', '--product', 'cli1k', '--count', '1000', '--out', out);
    expect(r.code).toBe(0);
    expect(r.out).toBe('');
    expect(r.err).toMatch(
      new RegExp(`^minted 1000 ID\\(s\\) of cli1k in \\d+ ms into ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n$`),
    );

    expect(statSync(out).mode & 0o777).toBe(0o600);
    const ids = lines(readFileSync(out, 'utf8'));
    expect(ids).toHaveLength(1000);
    expect(new Set(ids).size).toBe(1000);
    for (const id of ids) {
      expect(id).toMatch(/^[1-9][0-9]{15}$/);
      expect(checkId(id, 16)).toEqual({ ok: true, id });
    }

    const inRedis = await idsInRedis('cli1k');
    expect(inRedis.size).toBe(1000);
    expect([...inRedis.values()].every((st) => st === 'minted')).toBe(true);
    expect(await inventorySize('cli1k')).toBe(1000);
    // Each printed ID is exactly one of those hashes, in its bucket's inventory; Redis never holds the clear number.
    for (const id of ids) {
      const { hash, bucket } = h.ctx.ids.hash(id);
      expect(inRedis.get(keys.id(bucket, hash))).toBe('minted');
      expect(await h.r.sismember(keys.inventory(bucket, 'cli1k'), hash)).toBe(1);
    }
    for (const id of ids.slice(0, 5)) {
      const { hash, bucket } = h.ctx.ids.hash(id);
      const fields = await h.r.hgetall(keys.id(bucket, hash));
      expect(Object.values(fields).some((v) => v.includes(id))).toBe(false);
      expect(h.ctx.ids.unseal(fields.seal!)).toBe(id);
    }
  });

  it('without --out the IDs go to stdout', async () => {
    const ids = await cliMint('talk', 3);
    expect(ids).toHaveLength(3);
    for (const id of ids) expect(checkId(id, 16)).toEqual({ ok: true, id });
  });

  it('refuses a bad count (exit 2) and an unknown product (exit 1), minting nothing', async () => {
    // A word and a number past what a double holds exactly get the same answer: the range.
    for (const count of ['lots', '99999999999999999999']) {
      const bad = await cli('mint', '--product', 'talk', '--count', count);
      expect(bad.code).toBe(2);
      expect(bad.err).toContain('--count must be 1 to 10000000\n');
    }
    const unknown = await cli('mint', '--product', 'nope', '--count', '5');
    expect(unknown.code).toBe(1);
    expect(unknown.err).toBe('refused: unknown_product: no such product\n');
    expect((await idsInRedis('nope')).size).toBe(0);
    const opt = await cli('mint', '--product', 'talk', '--count', '1', '--colour', 'red');
    expect(opt.code).toBe(2);
    // --product left out is a usage error, said as such, not a product named '' refused.
    for (const args of [['--count', '5'], []]) {
      const missing = await cli('mint', ...args);
      expect(missing, args.join(' ')).toMatchObject({ code: 2, out: '' });
      expect(missing.err).toBe('tessera mint: --product is required\n');
    }
  });

  it('--out onto an existing file is refused cleanly: no crash, the file kept, nothing minted', async () => {
    // Run as a child process: the failure mode to rule out is an unhandled stream error that kills the process.
    await cli('catalog-load', '--products', file('x.json', JSON.stringify([talkProduct({ name: 'clobber' })])));
    const out = file('already-there.txt', 'keep me\n');
    const r = await spawnCli(['mint', '--product', 'clobber', '--count', '5', '--out', out]);
    expect(r.err).not.toContain("Unhandled 'error' event");
    expect(r.code).toBe(1);
    expect(r.err).toContain(out);
    expect(readFileSync(out, 'utf8')).toBe('keep me\n');
    // IDs minted but never written anywhere would be lost for good.
    expect((await idsInRedis('clobber')).size).toBe(0);
  });
});

/**
 * The CLI as a separate process (through tsx: no build needed); `until(run)`
 * ends it early, once what it wrote so far says enough.
 */
function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}, until?: (r: CliRun) => boolean): Promise<CliRun> {
  const root = resolve(__dirname, '..', '..');
  const tsx = join(root, 'node_modules', '.bin', 'tsx');
  if (!existsSync(tsx)) throw new Error('tsx not installed');
  return new Promise((done, fail) => {
    const child = spawn(tsx, [join(root, 'src', 'cli', 'main.ts'), ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const run = { code: -1, out: '', err: '' };
    const seen = (): void => void (until?.(run) && child.kill());
    child.stdout.on('data', (d: Buffer) => {
      run.out += d.toString();
      seen();
    });
    child.stderr.on('data', (d: Buffer) => {
      run.err += d.toString();
      seen();
    });
    child.on('error', fail);
    child.on('close', (code) => done({ ...run, code: code ?? -1 }));
  });
}

describe('output', () => {
  it('log lines go to stderr: stdout holds only what the command prints (an export, minted IDs)', async () => {
    // Redis away: the CLI logs its reconnects while it waits for it.
    const lost = (r: CliRun): boolean => `${r.out}${r.err}`.includes('connection lost');
    const r = await spawnCli(
      ['lookup', generateId(16)],
      { ...cliEnv(h), REDIS_URL: 'redis://127.0.0.1:1', LOG_LEVEL: 'warn' },
      lost,
    );
    expect(r.err).toContain('redis: connection lost; reconnecting');
    expect(r.out).toBe('');
  });
});

describe('call', () => {
  it('talks for --seconds and exits 0; closed by the gateway (its token revoked) it says so and exits 1', async () => {
    const [id] = await soldIds(h, talkProduct());
    const name = `cli-call-${Date.now()}`;
    const tok = await token(h, 'switch', name);
    const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const args = ['call', '--id', id!, '--dest', '4912345', '--token', tok, '--url', url];
    const short = await spawnCli([...args, '--seconds', '1']);
    expect(short).toMatchObject({ code: 0, out: expect.stringContaining('stopped: billed 1 s') });

    const long = spawnCli(args);
    // Started once the ID holds a live call.
    await until(async () => (await idFields(h, id!)).act === '1', 15_000);
    expect((await cli('token-revoke', '--name', name)).code).toBe(0);
    const cut = await long;
    expect(cut).toMatchObject({ code: 1, err: expect.stringContaining('connection closed by the gateway: 4001') });
    // What the call said before the gateway closed it stays on stdout, the failure on stderr alone.
    expect(cut.out).toContain('started: may talk');
    expect(cut.out).not.toContain('connection closed');
  });

  it('says the connection fee with the rate: a price list is checked by the first second it charges', async () => {
    // "rate 1000/s" and a first second costing 6000 left the 5000 fee to be guessed.
    const [id] = await soldIds(h, talkProduct());
    const tok = await token(h, 'switch', `cli-call-fee-${Date.now()}`);
    const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const r = await spawnCli([
      'call',
      '--id',
      id!,
      '--dest',
      '4491234',
      '--token',
      tok,
      '--url',
      url,
      '--seconds',
      '1',
    ]);
    expect(r.code).toBe(0);
    expect(lines(r.out)[0]).toBe('started: may talk 995 s, balance 1000000, rate 1000/s, fee 5000');
    expect(r.out).toContain('stopped: billed 1 s, cost 6000, balance 994000');
  });

  it('says a price per minute as the plan holds it, and what its first second costs', async () => {
    await putPlans(h.ctx.redis, [{ name: 'cli-min', rates: [{ prefix: '', rate: 100_000, per: 60, fee: 0 }] }]);
    const [id] = await soldIds(h, talkProduct({ name: 'cli-min', plan: 'cli-min' }));
    const tok = await token(h, 'switch', `cli-call-min-${Date.now()}`);
    const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const args = ['call', '--id', id!, '--dest', '4491234', '--token', tok, '--url', url, '--seconds', '1'];
    // The gateway has the plan once it rates the destination (it refreshes on the load's announcement).
    await until(async () => gw.catalog.tariffFor('cli-min', '4491234', Date.now()) !== undefined, 5000);
    const r = await spawnCli(args);
    expect(r.code).toBe(0);
    expect(lines(r.out)[0]).toBe('started: may talk 600 s, balance 1000000, rate 100000/60 s, fee 0');
    // floor(100000 / 60): the second's share of the minute, rounded down.
    expect(r.out).toContain('stopped: billed 1 s, cost 1666, balance 998334');
  });

  it('a stop refused for good (its session gone) ends the command with exit 1, not a wait for ever', async () => {
    const [id] = await soldIds(h, talkProduct());
    const name = `cli-call-lost-${Date.now()}`;
    const tok = await token(h, 'switch', name);
    const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const run = spawnCli(['call', '--id', id!, '--dest', '4912345', '--token', tok, '--url', url, '--seconds', '2']);
    await until(async () => (await idFields(h, id!)).act === '1', 15_000);
    // The call's session lost (as to a failover that lost its writes): the stop without an ID is unknown_call.
    const [session] = await h.r.keys(`ts:*:call:${name}:*`);
    expect(session).toBeDefined();
    await h.r.del(session!);
    const r = await run;
    expect(r.code).toBe(1);
    expect(r.err).toContain('refused: unknown_call');
  });

  it('no gateway at the URL: says where it looked and how to point it elsewhere, not that the gateway closed it', async () => {
    const r = await cli('call', '--id', '1', '--dest', '33', '--token', 't', '--url', 'ws://127.0.0.1:1/v1/switch');
    expect(r).toMatchObject({ code: 1, out: '' });
    expect(r.err).toContain('connection failed: connect ECONNREFUSED');
    expect(r.err).toContain('is the gateway running at ws://127.0.0.1:1/v1/switch?');
    expect(r.err).not.toContain('closed by the gateway');
  });

  it('a refused start is said in words on stderr, as every command says a refusal; --json keeps the raw message on stdout', async () => {
    const [id] = await soldIds(h, talkProduct());
    const tok = await token(h, 'switch', `cli-call-refused-${Date.now()}`);
    const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const typo = id!.slice(0, -1) + String((Number(id!.slice(-1)) + 1) % 10);
    const r = await cli('call', '--id', typo, '--dest', '4912345', '--token', tok, '--url', url);
    expect(r).toEqual({ code: 1, out: '', err: 'refused: bad_checksum: the ID is mistyped (check digit)\n' });
    const raw = await cli('call', '--id', typo, '--dest', '4912345', '--token', tok, '--url', url, '--json');
    expect(raw).toMatchObject({ code: 1, err: 'refused: bad_checksum: the ID is mistyped (check digit)\n' });
    expect(JSON.parse(raw.out)).toMatchObject({ op: 'error', ref: 'start', reason: 'bad_checksum' });
  });

  it('a refused connection (a bad token, a token of another role) is said with its reason first', async () => {
    const [id] = await soldIds(h, talkProduct());
    const url = `ws://127.0.0.1:${gw.port}/v1/switch`;
    const bad = await cli('call', '--id', id!, '--dest', '4912345', '--token', 'tsk_not-a-token', '--url', url);
    expect(bad).toMatchObject({
      code: 1,
      out: '',
      err: expect.stringMatching(/^refused: unauthorized: .*HTTP 401\)\n$/),
    });
    const admin = await token(h, 'admin', `cli-call-admin-${Date.now()}`);
    const other = await cli('call', '--id', id!, '--dest', '4912345', '--token', admin, '--url', url);
    expect(other).toMatchObject({
      code: 1,
      out: '',
      err: expect.stringMatching(/^refused: forbidden: .*HTTP 403\)\n$/),
    });
  });

  it('a refusal whose body is cut short (a proxy reset) is still a refusal: said, exit 1', async () => {
    const cut = createServer((s) => {
      s.on('error', () => undefined);
      s.once('data', () => {
        s.write('HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"err');
        setTimeout(() => s.destroy(), 50);
      });
    });
    await new Promise<void>((ok) => cut.listen(0, '127.0.0.1', ok));
    try {
      const url = `ws://127.0.0.1:${(cut.address() as AddressInfo).port}/v1/switch`;
      const r = await cli('call', '--id', '1', '--dest', '33', '--token', 't', '--url', url);
      expect(r).toMatchObject({ code: 1, out: '', err: expect.stringMatching(/^refused: unknown: .*HTTP 401\)\n$/) });
    } finally {
      await new Promise((ok) => cut.close(ok));
    }
  });

  it('without its ID, destination or token is a usage error before any connection', async () => {
    expect(await cli('call')).toMatchObject({ code: 2, err: expect.stringContaining('--id is required') });
    expect(await cli('call', '--id', '1', '--dest', '33')).toMatchObject({
      code: 2,
      err: expect.stringContaining('--token is required'),
    });
  });
});

describe('activate, lookup, block, unblock', () => {
  it('free text longer than the HTTP API takes (200 characters) is a usage error, and nothing changes', async () => {
    const [id] = (await cliMint('talk', 1)) as [string];
    const long = 'x'.repeat(201);
    const activate = await cli('activate', id, '--ref', long);
    expect(activate).toMatchObject({ code: 2, err: expect.stringContaining('--ref must be at most 200 characters') });
    expect((await cli('activate', id, '--ref', 'x'.repeat(200))).code).toBe(0);
    expect((await cli('block', id, '--reason', long)).code).toBe(2);
    expect((await cli('topup', id, '--amount', '1', '--note', long)).code).toBe(2);
    expect(JSON.parse((await cli('lookup', id)).out)).toMatchObject({ state: 'sold' });
  });

  it('activate then lookup', async () => {
    const [id] = (await cliMint('talk', 1)) as [string];
    const before = await cli('lookup', id);
    expect(before.code).toBe(0);
    expect(JSON.parse(before.out)).toMatchObject({
      state: 'minted',
      product: 'talk',
      face: 1_000_000,
      balance: 0,
      activeCalls: 0,
    });

    const a = await cli('activate', id, '--price', '950000', '--ref', 'shop-1');
    expect(a.code).toBe(0);
    const act = JSON.parse(a.out) as { balance: number; record: string };
    expect(act).toEqual({ balance: 1_000_000, record: expect.stringMatching(/^\d+-\d+$/) });
    const { hash, bucket } = h.ctx.ids.hash(id);
    const [[, flat]] = (await h.r.xrange(keys.sales(bucket), act.record, act.record)) as [[string, string[]]];
    expect(flat).toEqual([
      'id',
      hash,
      'product',
      'talk',
      'face',
      '1000000',
      'currency',
      'EUR',
      'price',
      '950000',
      'channel',
      'manual',
      'ref',
      'shop-1',
      'time',
      expect.stringMatching(/^\d+$/),
    ]);

    // Typed with dashes, as an operator reads it off a card.
    const dashed = id.replace(/(\d{4})(?=\d)/g, '$1-');
    const after = await cli('lookup', dashed);
    expect(after.code).toBe(0);
    const st = JSON.parse(after.out) as Record<string, unknown>;
    expect(st).toMatchObject({
      state: 'sold',
      product: 'talk',
      kind: 'talk',
      currency: 'EUR',
      face: 1_000_000,
      balance: 1_000_000,
      activeCalls: 0,
    });
    expect(st.sold).toEqual(expect.any(Number));

    const twice = await cli('activate', id);
    expect(twice).toEqual({ code: 1, out: '', err: 'refused: already_active: the ID is already sold\n' });
  });

  it('an unsold blocked ID is refused as blocked, not as already sold, and sells once unblocked', async () => {
    const [id] = (await cliMint('talk', 1)) as [string];
    expect((await cli('block', id, '--reason', 'stolen batch')).code).toBe(0);
    expect(await cli('activate', id)).toEqual({ code: 1, out: '', err: 'refused: blocked: the ID is blocked\n' });
    expect(JSON.parse((await cli('unblock', id)).out)).toEqual({ state: 'minted' });
    expect((await cli('activate', id)).code).toBe(0);
  });

  it('refusals: unknown ID, bad checksum, bad format → exit 1 with the reason', async () => {
    const unknown = generateId(16);
    expect(await cli('lookup', unknown)).toEqual({ code: 1, out: '', err: 'refused: unknown_id: no such ID\n' });
    expect(await cli('activate', unknown)).toEqual({ code: 1, out: '', err: 'refused: unknown_id: no such ID\n' });
    const badCheck = unknown.slice(0, -1) + String((Number(unknown.slice(-1)) + 1) % 10);
    expect(await cli('lookup', badCheck)).toEqual({
      code: 1,
      out: '',
      err: 'refused: bad_checksum: the ID is mistyped (check digit)\n',
    });
    expect(await cli('block', 'abc')).toEqual({ code: 1, out: '', err: 'refused: bad_format: not an ID number\n' });
    const missing = await cli('lookup');
    expect(missing.code).toBe(2);
  });

  it('block and unblock; a blocked ID cannot start a call', async () => {
    const [id] = (await cliMint('talk', 1)) as [string];
    expect((await cli('activate', id)).code).toBe(0);
    const b = await cli('block', id, '--reason', 'chargeback');
    expect(b.code).toBe(0);
    expect(JSON.parse(b.out)).toEqual({ state: 'blocked' });
    const l = JSON.parse((await cli('lookup', id)).out) as Record<string, unknown>;
    expect(l).toMatchObject({ state: 'blocked', blockedWhy: 'chargeback', balance: 1_000_000 });

    const c = await Client.connect(gw.port, await token(h));
    expect(await c.request({ op: 'start', ref: 1, call: 'cli-blk', id, dest: '4912345' })).toMatchObject({
      op: 'error',
      reason: 'blocked',
    });

    const u = await cli('unblock', id);
    expect(u.code).toBe(0);
    expect(JSON.parse(u.out)).toEqual({ state: 'sold' });
    expect(JSON.parse((await cli('lookup', id)).out)).toMatchObject({ state: 'sold', balance: 1_000_000 });
    expect(await c.request({ op: 'start', ref: 2, call: 'cli-blk-2', id, dest: '4912345' })).toMatchObject({
      op: 'started',
      balance: 1_000_000,
    });
    await c.request({ op: 'stop', ref: 3, call: 'cli-blk-2', sec: 0 });
    await c.close();

    expect(await cli('unblock', id)).toEqual({
      code: 1,
      out: '',
      err: 'refused: not_blocked: the ID is not blocked\n',
    });
  });
});

describe('tokens', () => {
  it('token-create, token-list, token-revoke; the gateway honours them', async () => {
    const r = await cli('token-create', '--role', 'switch', '--name', 'cli-sw');
    expect(r.code).toBe(0);
    const created = JSON.parse(r.out) as { token: string; id: string; name: string; role: string; created: number };
    expect(created).toEqual({
      token: expect.stringMatching(/^tsk_[A-Za-z0-9_-]{43}$/),
      id: expect.stringMatching(/^[0-9a-f]{12}$/),
      name: 'cli-sw',
      role: 'switch',
      created: expect.any(Number),
    });
    // Redis keeps only the hash of the token.
    const stored = await h.r.hgetall(keys.tokens);
    expect(JSON.stringify(stored)).not.toContain(created.token);

    const c = await Client.connect(gw.port, created.token);
    expect(await c.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong' });
    await c.close();

    const list = await cli('token-list');
    expect(list.code).toBe(0);
    expect(list.out).not.toContain(created.token);
    const infos = lines(list.out).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(infos).toContainEqual({ id: created.id, name: 'cli-sw', role: 'switch', created: created.created });

    const rev = await cli('token-revoke', '--name', 'cli-sw');
    expect(rev).toEqual({ code: 0, out: 'revoked 1 token(s)\n', err: '' });
    expect(lines((await cli('token-list')).out).map((l) => (JSON.parse(l) as { name: string }).name)).not.toContain(
      'cli-sw',
    );
    // A name that matches nothing is a mistake to say, not "revoked 0 token(s)".
    expect(await cli('token-revoke', '--name', 'cli-sw')).toEqual({
      code: 1,
      out: '',
      err: 'no token is named cli-sw\n',
    });
    expect((await cli('token-update', '--name', 'cli-sw', '--role', 'admin')).code).toBe(1);
    expect((await cli('token-revoke')).code).toBe(2);

    // A scanner token becomes a switch token once its venue and gate are cleared; an update
    // that changes nothing is a mistake to say, not "updated 1 token(s)".
    expect((await cli('token-create', '--name', 'cli-sc', '--role', 'scanner', '--venue', 'arena')).code).toBe(0);
    expect(await cli('token-update', '--name', 'cli-sc')).toMatchObject({ code: 2, err: /nothing to change/ });
    expect(await cli('token-update', '--name', 'cli-sc', '--role', 'switch', '--venue', '')).toEqual({
      code: 0,
      out: 'updated 1 token(s)\n',
      err: '',
    });
    const sc = lines((await cli('token-list')).out).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(sc.find((t) => t.name === 'cli-sc')).toMatchObject({ role: 'switch' });
    expect(sc.find((t) => t.name === 'cli-sc')).not.toHaveProperty('venue');
    expect((await cli('token-revoke', '--name', 'cli-sc')).code).toBe(0);

    // The gateway drops the revoked token as soon as the change reaches it.
    const deadline = Date.now() + 3000;
    let status = 0;
    while (Date.now() < deadline) {
      try {
        const again = await Client.connect(gw.port, created.token);
        await again.close();
        await sleep(50);
      } catch (e) {
        status = (e as { status?: number }).status ?? -1;
        break;
      }
    }
    expect(status).toBe(401);
  });

  it('a scanner token carries its venue; a bad role is refused', async () => {
    const r = await cli('token-create', '--role', 'scanner', '--name', 'gate-a', '--venue', 'arena');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ name: 'gate-a', role: 'scanner', venue: 'arena' });
    // A grant no token may have is a usage error (2), like a missing option.
    const bad = await cli('token-create', '--role', 'root', '--name', 'x');
    expect(bad.code).toBe(2);
    expect((await cli('token-create', '--role', 'switch')).code).toBe(2);
    expect((await cli('token-create', '--role', 'scanner', '--name', 'no-venue')).code).toBe(2);
    expect(bad.err).toMatch(/^tessera token-create: token: role /);
    expect(lines((await cli('token-list')).out).map((l) => (JSON.parse(l) as { name: string }).name)).not.toContain(
      'x',
    );
  });

  it('no sales token is named web (the buy page keys its purchases so): not created, not changed into one', async () => {
    const sales = await cli('token-create', '--role', 'sales', '--name', 'web');
    expect(sales.code).toBe(2);
    expect(sales.err).toMatch(/^tessera token-create: token: reserved_name: .*a sales token may not be named web/);
    // Other roles never reach the purchase API: the name is theirs to use, but the role cannot become sales.
    expect((await cli('token-create', '--role', 'switch', '--name', 'web')).code).toBe(0);
    const update = await cli('token-update', '--name', 'web', '--role', 'sales');
    expect(update.code).toBe(1);
    expect(update.err).toMatch(/^tessera token-update: token: reserved_name: /);
    const webs = lines((await cli('token-list')).out)
      .map((l) => JSON.parse(l) as { name: string; role: string })
      .filter((t) => t.name === 'web');
    expect(webs.map((t) => t.role)).toEqual(['switch']);
    expect((await cli('token-revoke', '--name', 'web')).out).toBe('revoked 1 token(s)\n');
  });

  it('only a scanner token has a venue or gate: not given to another role, at creation or by an update', async () => {
    const sw = await cli('token-create', '--role', 'switch', '--name', 'sw-venue', '--venue', 'arena');
    expect(sw).toMatchObject({ code: 2, err: expect.stringContaining('a switch token has no venue or gate') });
    expect((await cli('token-create', '--role', 'switch', '--name', 'sw-plain')).code).toBe(0);
    expect((await cli('token-update', '--name', 'sw-plain', '--venue', 'arena')).code).toBe(1);
    expect((await cli('token-revoke', '--name', 'sw-plain')).out).toBe('revoked 1 token(s)\n');
  });

  it('no admin token is named cli (tessera topup --key keys its top-ups so)', async () => {
    const admin = await cli('token-create', '--role', 'admin', '--name', 'cli');
    expect(admin.code).toBe(2);
    expect(admin.err).toMatch(/^tessera token-create: token: reserved_name: /);
    expect((await cli('token-create', '--role', 'sales', '--name', 'cli')).code).toBe(0);
    expect((await cli('token-update', '--name', 'cli', '--role', 'admin')).code).toBe(1);
    expect((await cli('token-revoke', '--name', 'cli')).out).toBe('revoked 1 token(s)\n');
  });

  it("a name is one role's: another role's token of it is refused name_taken, a rotation in the role is not", async () => {
    const first = await cli('token-create', '--role', 'switch', '--name', 'shared-1');
    expect(first.code).toBe(0);
    const before = await h.r.hgetall(keys.tokens);
    for (const [role, ...more] of [['admin'], ['sales'], ['scanner', '--venue', 'arena']] as const) {
      expect(await cli('token-create', '--role', role, '--name', 'shared-1', ...more)).toEqual({
        code: 1,
        out: '',
        err: `refused: name_taken: ${messageOf('name_taken')} (shared-1 is the name of a switch token)\n`,
      });
    }
    // Nothing written, nothing announced as a change.
    expect(await h.r.hgetall(keys.tokens)).toEqual(before);

    // Rotation: a second switch token of the name works beside the first, and the first can go alone.
    const second = await cli('token-create', '--role', 'switch', '--name', 'shared-1');
    expect(second.code).toBe(0);
    const [a, b] = [first, second].map((r) => JSON.parse(r.out) as { token: string; id: string });
    const c = await Client.connect(gw.port, b!.token);
    expect(await c.request({ op: 'ping', ref: 1 })).toMatchObject({ op: 'pong' });
    await c.close();
    expect((await cli('token-revoke', '--name', 'shared-1', '--id', a!.id)).out).toBe('revoked 1 token(s)\n');
    // Once the name has no token left, any role may take it.
    expect((await cli('token-revoke', '--name', 'shared-1')).out).toBe('revoked 1 token(s)\n');
    expect((await cli('token-create', '--role', 'admin', '--name', 'shared-1')).code).toBe(0);
    expect((await cli('token-revoke', '--name', 'shared-1')).code).toBe(0);
  });

  it("a scanner name is one venue's: a rotation at another venue is refused name_elsewhere", async () => {
    expect((await cli('token-create', '--role', 'scanner', '--name', 'till-9', '--venue', 'arena')).code).toBe(0);
    const before = await h.r.hgetall(keys.tokens);
    // Its scan ids are the name's: at the stadium it could retry (a grant) and reverse the arena's sales.
    expect(await cli('token-create', '--role', 'scanner', '--name', 'till-9', '--venue', 'stadium')).toEqual({
      code: 1,
      out: '',
      err: `refused: name_elsewhere: ${messageOf('name_elsewhere')} (till-9 is the name of a scanner token of venue arena)\n`,
    });
    expect(await h.r.hgetall(keys.tokens)).toEqual(before);
    expect((await cli('token-create', '--role', 'scanner', '--name', 'till-9', '--venue', 'arena')).code).toBe(0);
    expect((await cli('token-revoke', '--name', 'till-9')).out).toBe('revoked 2 token(s)\n');
  });
});

describe('export', () => {
  it('exports a call detail record as CSV and NDJSON', async () => {
    const [id] = (await cliMint('talk', 1)) as [string];
    expect((await cli('activate', id)).code).toBe(0);
    const swName = 'sw-export';
    const c = await Client.connect(gw.port, await token(h, 'switch', swName));
    await c.request({ op: 'start', ref: 1, call: 'exp-1', id, dest: '4412345' });
    await c.request({ op: 'tick', ref: 2, call: 'exp-1', sec: 5 });
    expect(await c.request({ op: 'stop', ref: 3, call: 'exp-1', sec: 7, cause: 'busy' })).toMatchObject({
      billedSec: 7,
      cost: 1400,
      balance: 998_600,
    });
    await c.close();
    const { hash, bucket } = h.ctx.ids.hash(id);

    const nd = await cli('export', 'calls', '--format', 'ndjson');
    expect(nd.code).toBe(0);
    const recs = lines(nd.out).map((l) => JSON.parse(l) as Record<string, string>);
    expect(nd.err).toBe(`exported ${recs.length} record(s)\n`);
    const mine = recs.filter((r) => r.switch === swName);
    expect(mine).toHaveLength(1);
    const rec = mine[0]!;
    expect(rec).toEqual({
      record: expect.stringMatching(new RegExp(`^${bucket}/\\d+-\\d+$`)),
      time: expect.stringMatching(/^\d+$/),
      switch: swName,
      call: 'exp-1',
      id: hash,
      dest: '4412345',
      start: expect.stringMatching(/^\d+$/),
      answer: expect.stringMatching(/^\d+$/),
      end: expect.stringMatching(/^\d+$/),
      sec: '7',
      used: '7',
      blocks: '1x7',
      rate: '200',
      fee: '0',
      disc: '0',
      cost: '1400',
      short: '0',
      bal: '998600',
      cause: 'busy',
    });
    expect(nd.out).not.toContain(id);
    // Records come in time order.
    const times = recs.map((r) => Number(r.time));
    expect(times).toEqual([...times].sort((a, b) => a - b));

    const csv = await cli('export', 'calls', '--format', 'csv');
    expect(csv.code).toBe(0);
    expect(lines(csv.out)[0]).toBe(
      'record,time,switch,call,id,dest,start,answer,end,sec,used,blocks,rate,fee,disc,cost,short,bal,cause,per',
    );
    const rows = parse<Record<string, string>>(csv.out, { columns: true });
    expect(rows).toHaveLength(recs.length);
    // A per-second call's record has no `per`: its CSV column is empty.
    expect(rows.filter((r) => r.switch === swName)).toEqual([{ ...rec, per: '' }]);

    // Default format is CSV; --out writes a 0600 file.
    const outFile = join(h.dir, 'calls.csv');
    const f = await cli('export', 'calls', '--out', outFile);
    expect(f.code).toBe(0);
    expect(f.out).toBe('');
    expect(readFileSync(outFile, 'utf8')).toBe(csv.out);
    expect(statSync(outFile).mode & 0o777).toBe(0o600);

    // A window that ends before the call excludes it.
    const none = await cli('export', 'calls', '--format', 'ndjson', '--until', String(Number(rec.time) - 1));
    expect(lines(none.out).filter((l) => (JSON.parse(l) as Record<string, string>).switch === swName)).toHaveLength(0);
  });

  it('exports sales', async () => {
    const [id] = (await cliMint('talk', 1)) as [string];
    expect((await cli('activate', id, '--price', '123', '--ref', 'exp-sale')).code).toBe(0);
    const r = await cli('export', 'sales', '--format', 'ndjson');
    expect(r.code).toBe(0);
    const mine = lines(r.out)
      .map((l) => JSON.parse(l) as Record<string, string>)
      .filter((x) => x.ref === 'exp-sale');
    expect(mine).toEqual([
      {
        record: expect.any(String),
        time: expect.any(String),
        id: h.ctx.ids.hash(id).hash,
        product: 'talk',
        face: '1000000',
        currency: 'EUR',
        price: '123',
        channel: 'manual',
        ref: 'exp-sale',
      },
    ]);
  });

  it('refuses a bad kind or format (exit 2)', async () => {
    expect((await cli('export', 'cows')).code).toBe(2);
    expect((await cli('export', 'calls', '--format', 'xml')).code).toBe(2);
  });
});

describe('commands', () => {
  it('an unknown command exits 2 with the usage', async () => {
    const r = await cli('frobnicate');
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^unknown command: frobnicate\nusage: tessera <command>/);
  });

  it('help lists the commands and exits 0', async () => {
    const r = await cli('help');
    expect(r.code).toBe(0);
    for (const c of [
      'catalog-load',
      'mint',
      'activate',
      'block',
      'unblock',
      'lookup',
      'token-create',
      'token-list',
      'token-revoke',
      'export',
    ])
      expect(r.out).toContain(`  ${c} `);
    // Asked for, the list is on stdout (`tessera help | less`); with no command at all it is a usage error.
    expect(r.err).toBe('');
    expect(await cli()).toMatchObject({ code: 2, out: '', err: expect.stringContaining('usage: tessera <command>') });
    // Bounds a typo cannot get past.
    expect((await cli('mint', '--product', 'talk', '--count', '0')).code).toBe(2);
    expect((await cli('mint', '--product', 'talk', '--count', '99999999999')).code).toBe(2);
    expect((await cli('export', 'calls', '--since', '2000', '--until', '1000')).code).toBe(2);
  });

  it("--help, -h and help <command> print that command's usage and exit 0, touching nothing", async () => {
    for (const args of [
      ['mint', '--help'],
      ['mint', '-h'],
      ['help', 'mint'],
    ]) {
      const r = await cli(...args);
      expect(r.code).toBe(0);
      expect(r.out).toMatch(/^usage: tessera mint --product NAME --count N \[--out FILE\]\n/);
    }
    const token = await cli('token', 'create', '--help');
    expect(token.code).toBe(0);
    expect(token.out).toMatch(/^usage: tessera token-create --role /);
    const kamailio = await cli('kamailio', '--help');
    expect(kamailio.code).toBe(0);
    expect(kamailio.out).toContain('--evapi');
    // The default URL follows PORT, as the README says: the usage says so rather than 8080.
    expect(kamailio.out).toContain('--gateway ws://localhost:$PORT/v1/switch');
    const call = await cli('call', '--help');
    expect(call.out).toContain('--url ws://localhost:$PORT/v1/switch');
    // The audit's usage states the equation it checks, as docs/operations.md does: top-ups in; vouchers sent and
    // value forfeited at expiry out.
    const audit = await cli('help', 'audit');
    expect(audit.out).toContain(
      'value sold + top-ups = balance + calls + redemptions + refunds + vouchers sent + expired',
    );
    // After `--` an argument is taken as it is: here an ID that is none.
    const literal = await cli('lookup', '--', '--help');
    expect(literal.code).not.toBe(0);
    expect(literal.out).not.toContain('usage:');
  });

  it('a bad environment is a usage error naming the variable (exit 2)', async () => {
    const saved = process.env.BUCKETS;
    process.env.BUCKETS = '0';
    try {
      const r = await cli('lookup', generateId(16));
      expect(r.code).toBe(2);
      expect(r.err).toContain('BUCKETS');
    } finally {
      process.env.BUCKETS = saved;
    }
  });

  it('demo: loads the demo catalog, makes tokens, sells one ID that can call', async () => {
    const r = await cli('demo');
    expect(r.code).toBe(0);
    const d = JSON.parse(r.out) as {
      id: string;
      product: string;
      balance: number;
      switchToken: string;
      adminToken: string;
    };
    expect(d).toMatchObject({ product: 'talk-10', balance: 10_000_000 });
    expect(checkId(d.id, 16)).toEqual({ ok: true, id: d.id });
    const c = await Client.connect(gw.port, d.switchToken);
    expect(await c.request({ op: 'start', ref: 1, call: 'demo-1', id: d.id, dest: '33612345678' })).toMatchObject({
      op: 'started',
      rate: 1200,
      fee: 50_000,
      maxSec: Math.floor((10_000_000 - 50_000) / 1200),
    });
    await c.request({ op: 'stop', ref: 2, call: 'demo-1', sec: 0 });
    await c.close();
  });
});
