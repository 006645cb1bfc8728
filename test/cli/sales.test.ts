/**
 * The sales commands of the operator CLI: access numbers, sale lookup and
 * refund (voiding at the sandbox card company over HTTP), the sales export with
 * refund fields, the demo's stock and access numbers, and `sandbox-provider` as
 * a process of its own. In-process through runCli like test/cli/operator.test.ts,
 * against the harness Redis, gateway and sandbox.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readCatalog } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { checkId } from '../../src/ids/idnum';
import { keys } from '../../src/redis/keys';
import { cli, cliEnv, harnessFile, lines, setEnv } from '../support/cli';
import { testDir } from '../support/temp';
import { gateway, mint, seedCatalog, startHarness, talkProduct, token, uniq, type Harness } from '../support/harness';
import { http } from '../support/http';
import { idKeyOf } from '../support/redis';
import { sleep } from '../support/wait';
import { Client } from '../support/ws-client';

let h: Harness;
let gw: Gateway;
let sales: string;
let restoreEnv: (() => void) | undefined;
const PRODUCT = talkProduct({ name: 'cli-sale', price: 900_000 });
const ALICE = { card: '4000000000000002', cardPin: '1234' };

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [talkProduct(), PRODUCT]);
  gw = await gateway(h);
  sales = await token(h, 'sales', 'cli-sales-shop');
  restoreEnv = setEnv(
    cliEnv(h, {
      PROVIDER_URL: h.cfg.provider.url,
      PROVIDER_KEY: undefined,
      PROVIDER_TIMEOUT_MS: undefined,
      SANDBOX_PORT: undefined,
    }),
  );
});
afterAll(async () => {
  restoreEnv?.();
  await gw?.close();
  await h?.stop();
});

const file = (name: string, text: string): string => harnessFile(h, name, text);

/** Buys one ID of PRODUCT through POST /v1/purchases with Alice's card. */
async function buy(): Promise<{ id: string; reference: string }> {
  await mint(h, PRODUCT, 1);
  const res = await http(gw, 'POST', '/v1/purchases', {
    token: sales,
    idem: uniq('cli', 8),
    body: { product: PRODUCT.name, pin: '2468', payment: ALICE },
  });
  const body = res.json as { id: string };
  expect(res.status, JSON.stringify(body)).toBe(200);
  const reference = (await h.r.hget(idKeyOf(h, body.id), 'pref'))!;
  expect(reference).toMatch(/^tsp_/);
  return { id: body.id, reference };
}

const idState = (id: string): Promise<string | null> => h.r.hget(idKeyOf(h, id), 'st');

const ACCESS_CSV = [
  '# area,name,countryCode,number,label,notes',
  'area,name,countryCode,number,label,notes',
  'jp-osaka,Japan – Osaka,81,06-5550-0101,Osaka city,"Dial 0 first from a hotel room, then the number."',
  'jp-osaka,,,0120-555-101,Toll-free,',
  'de-berlin,Germany – Berlin,49,030 5550 0101,,',
  '',
].join('\n');

describe('catalog-load --access and catalog-show', () => {
  it('loads access areas from CSV (one row per number); catalog-show and the running gateway have them', async () => {
    const r = await cli('catalog-load', '--access', file('access.csv', ACCESS_CSV));
    expect(r).toEqual({ code: 0, out: 'loaded 2 access area(s)\n', err: '' });
    const osaka = {
      area: 'jp-osaka',
      name: 'Japan – Osaka',
      countryCode: '81',
      notes: 'Dial 0 first from a hotel room, then the number.',
      numbers: [
        { number: '06-5550-0101', label: 'Osaka city' },
        { number: '0120-555-101', label: 'Toll-free' },
      ],
    };
    expect((await readCatalog(h.r)).access.get('jp-osaka')).toEqual(osaka);

    const show = await cli('catalog-show');
    expect(show.code).toBe(0);
    const shown = JSON.parse(show.out) as { access: unknown[]; products: { name: string }[] };
    expect(shown.access).toContainEqual(osaka);
    expect(shown.access).toContainEqual({
      area: 'de-berlin',
      name: 'Germany – Berlin',
      countryCode: '49',
      numbers: [{ number: '030 5550 0101' }],
    });
    expect(shown.products.map((p) => p.name)).toContain(PRODUCT.name);

    // The gateway refreshes on the announcement: the JSON and the page show the new area.
    const deadline = Date.now() + 3000;
    let areas: { area: string }[] = [];
    while (Date.now() < deadline) {
      areas = ((await http(gw, 'GET', '/v1/access-numbers')).json as { areas: { area: string }[] }).areas;
      if (areas.some((a) => a.area === 'jp-osaka')) break;
      await sleep(50);
    }
    expect(areas).toContainEqual(osaka);
    const page = await http(gw, 'GET', '/access/jp-osaka');
    expect(page.status).toBe(200);
    expect(page.text).toContain('0120-555-101');
  });

  it('an area given two names or country codes, or a number listed twice, is refused and nothing is loaded', async () => {
    const before = (await readCatalog(h.r)).access.get('fr-lyon');
    const conflicting = [
      'area,name,countryCode,number',
      'fr-lyon,France – Lyon,33,04 55 50 01 01',
      'fr-lyon,France – Lyons,33,0800 555 101',
    ].join('\n');
    const r = await cli('catalog-load', '--access', file('conflict.csv', conflicting));
    expect(r.code).toBe(1);
    expect(r.err).toContain('row 2: area fr-lyon has two different values of name');
    // Twice however it is spaced: a phone dials both alike.
    const twice = [
      'area,name,countryCode,number',
      'fr-lyon,France – Lyon,33,04 55 50 01 01',
      'fr-lyon,,,04-55-500-101',
    ];
    const t = await cli('catalog-load', '--access', file('twice.csv', twice.join('\n')));
    expect(t.code).toBe(1);
    expect(t.err).toContain('the number 0455500101 is given twice');
    expect((await readCatalog(h.r)).access.get('fr-lyon')).toEqual(before);
  });

  it('loads JSON ({"areas": [...]}) through the two-word form; loading an area again replaces it', async () => {
    const json = file(
      'access.json',
      JSON.stringify({
        areas: [
          {
            area: 'de-berlin',
            name: 'Germany – Berlin',
            countryCode: '49',
            numbers: [{ number: '030 5550 0202', label: 'new' }],
          },
        ],
      }),
    );
    const r = await cli('catalog', 'load', '--access', json);
    expect(r).toEqual({ code: 0, out: 'loaded 1 access area(s)\n', err: '' });
    expect((await readCatalog(h.r)).access.get('de-berlin')).toEqual({
      area: 'de-berlin',
      name: 'Germany – Berlin',
      countryCode: '49',
      numbers: [{ number: '030 5550 0202', label: 'new' }],
    });
  });

  it('refuses a bad access file with exit 1 and loads nothing of it', async () => {
    const before = await h.r.get(keys.catalogVersion);
    const bad = file(
      'bad-access.csv',
      'area,name,countryCode,number\nfr-lyon,France – Lyon,33,04 55 50 01 01\nfr-nice,France – Nice,33,call us\n',
    );
    const r = await cli('catalog-load', '--access', bad);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^refused: bad_catalog_entry: access area #2: numbers\.0\.number /);
    expect((await readCatalog(h.r)).access.has('fr-lyon')).toBe(false);
    expect(await h.r.get(keys.catalogVersion)).toBe(before);
    const noArea = await cli('catalog-load', '--access', file('no-area.csv', 'area,name,number\n,Nowhere,123456\n'));
    expect(noArea.code).toBe(1);
    expect(noArea.err).toContain('refused: bad_catalog_file: access file ');
    expect(noArea.err).toContain('a row without an area');
    // A missing file is reported before anything else is written.
    const missing = await cli(
      'catalog-load',
      '--products',
      file('p-ok.json', JSON.stringify([talkProduct({ name: 'never-loaded' })])),
      '--access',
      join(h.dir, 'nope.csv'),
    );
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^refused: file_unreadable: ENOENT: .*nope\.csv/);
    expect((await readCatalog(h.r)).products.has('never-loaded')).toBe(false);
  });

  it('without any file: usage error, exit 2', async () => {
    const r = await cli('catalog-load');
    expect(r.code).toBe(2);
    expect(r.err).toContain('--access');
  });
});

describe('sale-lookup', () => {
  it('shows the ID, its sale record (price, provider reference, commission, net) and no refund', async () => {
    const { id, reference } = await buy();
    const r = await cli('sale-lookup', id);
    expect(r.code).toBe(0);
    const v = JSON.parse(r.out) as { status: Record<string, unknown>; sale: Record<string, string>; refund?: unknown };
    expect(v.status).toMatchObject({
      state: 'sold',
      product: PRODUCT.name,
      kind: 'talk',
      currency: 'EUR',
      face: 1_000_000,
      balance: 1_000_000,
      activeCalls: 0,
    });
    const commission = Math.floor((900_000 * h.sandbox.commissionBp) / 10_000);
    expect(v.sale).toMatchObject({
      record: expect.stringMatching(/^\d+-\d+$/),
      id: h.ctx.ids.hash(id).hash,
      product: PRODUCT.name,
      price: '900000',
      channel: 'api:cli-sales-shop',
      ref: reference,
      provider: reference,
      commission: String(commission),
      net: String(900_000 - commission),
    });
    expect(v.refund).toBeUndefined();
    // Same through the two-word form, and with the ID typed in groups.
    const two = await cli('sale', 'lookup', id.replace(/(\d{4})(?=\d)/g, '$1 '));
    expect(two.code).toBe(0);
    expect(JSON.parse(two.out)).toEqual(v);
  });

  it('refusals: unknown ID, bad checksum (exit 1); no ID (exit 2)', async () => {
    const [id] = (await mint(h, PRODUCT, 1)) as [string];
    const other = id.slice(0, -1) + String((Number(id.slice(-1)) + 1) % 10);
    expect(await cli('sale-lookup', other)).toEqual({
      code: 1,
      out: '',
      err: 'refused: bad_checksum: the ID is mistyped (check digit)\n',
    });
    // A minted, unsold ID has no sale.
    const unsold = await cli('sale-lookup', id);
    expect(unsold.code).toBe(0);
    expect(JSON.parse(unsold.out)).toMatchObject({ status: { state: 'minted' } });
    expect(JSON.parse(unsold.out).sale).toBeUndefined();
    expect((await cli('sale-lookup')).code).toBe(2);
  });
});

describe('sale-refund', () => {
  const restoreProvider = (): void => {
    process.env.PROVIDER_URL = h.cfg.provider.url;
  };
  afterEach(restoreProvider);

  it('blocks the unused ID, records the refund and voids the payment; a repeat says duplicate', async () => {
    const { id, reference } = await buy();
    const alice = h.sandbox.members.get(ALICE.card)!;
    const usedBefore = alice.used;
    expect(h.sandbox.payments.get(reference)?.state).toBe('captured');

    const r = await cli('sale-refund', id, '--reason', 'customer changed their mind');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out) as Record<string, unknown>;
    expect(out).toEqual({
      refunded: 1_000_000,
      record: expect.stringMatching(/^\d+-\d+$/),
      provider: 'voided',
      duplicate: false,
    });
    expect(h.sandbox.payments.get(reference)?.state).toBe('voided');
    expect(alice.used).toBe(usedBefore - 900_000);
    expect(await idState(id)).toBe('blocked');

    const look = JSON.parse((await cli('sale-lookup', id)).out) as {
      status: Record<string, unknown>;
      refund: Record<string, string>;
    };
    expect(look.status).toMatchObject({
      state: 'blocked',
      balance: 0,
      blockedWhy: 'refunded: customer changed their mind',
    });
    expect(look.refund).toMatchObject({
      record: out.record,
      type: 'refund',
      amount: '1000000',
      ref: reference,
      reason: 'customer changed their mind',
      channel: expect.stringMatching(/^cli:/),
    });

    const again = await cli('sale', 'refund', id);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.out)).toEqual({
      refunded: 1_000_000,
      record: out.record,
      provider: 'voided',
      duplicate: true,
    });
    // No refund twice in the records.
    const { bucket } = h.ctx.ids.hash(id);
    const refunds = (await h.r.xrange(keys.sales(bucket), '-', '+')).filter(
      ([, f]) => f.includes('refund') && f.includes(reference),
    );
    expect(refunds).toHaveLength(1);
  });

  it('refuses an ID that has been used (a call was made), changing nothing', async () => {
    const { id, reference } = await buy();
    const c = await Client.connect(gw.port, await token(h));
    expect(await c.request({ op: 'start', ref: 1, call: `cli-used-${id}`, id, dest: '4412345' })).toMatchObject({
      op: 'started',
    });
    await c.request({ op: 'tick', ref: 2, call: `cli-used-${id}`, sec: 2 });
    await c.request({ op: 'stop', ref: 3, call: `cli-used-${id}`, sec: 2 });
    await c.close();
    const r = await cli('sale-refund', id);
    expect(r).toEqual({ code: 1, out: '', err: 'refused: already_used: the ID has been used\n' });
    expect(await idState(id)).toBe('sold');
    expect(h.sandbox.payments.get(reference)?.state).toBe('captured');
  });

  it('without PROVIDER_URL: a clear usage error (exit 2) and nothing changes', async () => {
    const { id, reference } = await buy();
    delete process.env.PROVIDER_URL;
    const r = await cli('sale-refund', id);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^tessera sale-refund: PROVIDER_URL is not set/);
    expect(r.err).toContain('/v1/admin/sales/{id}/refund');
    expect(await idState(id)).toBe('sold');
    expect(h.sandbox.payments.get(reference)?.state).toBe('captured');
  });

  it('card company unreachable: the refund is recorded, exit 1 says so; running it again voids', async () => {
    const { id, reference } = await buy();
    process.env.PROVIDER_URL = 'http://127.0.0.1:9'; // discard port: connection refused
    process.env.PROVIDER_TIMEOUT_MS = '500';
    try {
      const r = await cli('sale-refund', id, '--reason', 'lost card');
      expect(r.code).toBe(1);
      expect(JSON.parse(r.out)).toMatchObject({ refunded: 1_000_000, provider: 'unknown', duplicate: false });
      expect(r.err).toContain('did not confirm the void');
      expect(await idState(id)).toBe('blocked');
      expect(h.sandbox.payments.get(reference)?.state).toBe('captured');
    } finally {
      delete process.env.PROVIDER_TIMEOUT_MS;
    }
    restoreProvider();
    const again = await cli('sale-refund', id);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.out)).toMatchObject({ provider: 'voided', duplicate: true });
    expect(h.sandbox.payments.get(reference)?.state).toBe('voided');
  });

  it('card company refuses the void: exit 1 says the buyer is not paid back and to ask it, not to run it again', async () => {
    const { id, reference } = await buy();
    h.sandbox.payments.delete(reference); // a payment the card company does not know: it refuses the void
    const r = await cli('sale-refund', id, '--reason', 'lost card');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out)).toMatchObject({ provider: 'void_refused: unknown_payment', duplicate: false });
    expect(r.err).toContain(
      'the card company refused the void (void_refused: unknown_payment): the buyer is not paid back; settle it with the card company',
    );
    expect(r.err).not.toContain('run the same refund again');
    expect(await idState(id)).toBe('blocked');
  });

  it('a manually activated ID is refunded without asking the card company', async () => {
    const [id] = (await mint(h, PRODUCT, 1)) as [string];
    expect((await cli('activate', id, '--price', '500000')).code).toBe(0);
    const r = await cli('sale-refund', id);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ refunded: 1_000_000, provider: 'not_paid_through_a_provider' });
  });

  it('refuses an unsold ID (exit 1)', async () => {
    const [id] = (await mint(h, PRODUCT, 1)) as [string];
    expect(await cli('sale-refund', id)).toEqual({
      code: 1,
      out: '',
      err: 'refused: not_sold: the ID has not been sold\n',
    });
  });
});

describe('export sales', () => {
  it('exports sales with provider, commission and net, and refunds with type, amount and reason (CSV and NDJSON)', async () => {
    const { id, reference } = await buy();
    expect((await cli('sale-refund', id, '--reason', 'export test')).code).toBe(0);
    const nd = await cli('export', 'sales', '--format', 'ndjson');
    expect(nd.code).toBe(0);
    const recs = lines(nd.out).map((l) => JSON.parse(l) as Record<string, string>);
    const mine = recs.filter((x) => x.ref === reference);
    const hash = h.ctx.ids.hash(id).hash;
    const commission = String(Math.floor((900_000 * h.sandbox.commissionBp) / 10_000));
    expect(mine).toEqual([
      {
        record: expect.any(String),
        time: expect.any(String),
        id: hash,
        product: PRODUCT.name,
        face: '1000000',
        currency: 'EUR',
        price: '900000',
        channel: 'api:cli-sales-shop',
        ref: reference,
        provider: reference,
        commission,
        net: String(900_000 - Number(commission)),
      },
      {
        record: expect.any(String),
        time: expect.any(String),
        type: 'refund',
        id: hash,
        product: PRODUCT.name,
        face: '1000000',
        currency: 'EUR',
        amount: '1000000',
        ref: reference,
        channel: expect.stringMatching(/^cli:/),
        reason: 'export test',
      },
    ]);

    const csv = await cli('export', 'sales');
    expect(csv.code).toBe(0);
    expect(lines(csv.out)[0]).toBe(
      'record,time,id,product,face,currency,price,channel,ref,type,amount,provider,commission,net,reason,source,note,to,bal,exp',
    );
    const rows = parse<Record<string, string>>(csv.out, { columns: true }).filter((x) => x.ref === reference);
    expect(rows.map((x) => [x.type, x.price, x.amount, x.provider, x.commission, x.net, x.reason])).toEqual([
      ['', '900000', '', reference, commission, String(900_000 - Number(commission)), ''],
      ['refund', '', '1000000', '', '', '', 'export test'],
    ]);
  });
});

describe('demo', () => {
  it('also loads the demo access numbers and puts 20 of each talk product on sale', async () => {
    const r = await cli('demo');
    expect(r.code).toBe(0);
    const d = JSON.parse(r.out) as { id: string; onSale: Record<string, number>; accessAreas: string[] };
    expect(checkId(d.id, 16)).toEqual({ ok: true, id: d.id });
    expect(d.onSale).toEqual({ 'talk-10': 20, 'talk-25-duo': 20 });
    expect(d.accessAreas).toEqual(expect.arrayContaining(['jp-tokyo', 'uk-london', 'fr-paris', 'us-new-york']));
    const cat = await readCatalog(h.r);
    for (const a of d.accessAreas) expect(cat.access.get(a)?.numbers.length).toBeGreaterThan(0);

    // The buy page offers them once the gateway has the new catalog.
    const deadline = Date.now() + 3000;
    let products: { name: string; available: number }[] = [];
    while (Date.now() < deadline) {
      products = ((await http(gw, 'GET', '/v1/products')).json as { products: { name: string; available: number }[] })
        .products;
      if (products.some((p) => p.name === 'talk-25-duo')) break;
      await sleep(50);
    }
    expect(products.find((p) => p.name === 'talk-10')?.available).toBe(20);
    expect(products.find((p) => p.name === 'talk-25-duo')?.available).toBe(20);
  });
});

describe('sandbox-provider (its own process)', () => {
  const root = resolve(__dirname, '..', '..');
  const tsx = join(root, 'node_modules', '.bin', 'tsx');
  const running: ChildProcess[] = [];
  afterEach(() => {
    for (const c of running.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  /** Starts the command; resolves with the URL it prints, or with its exit when it fails. */
  function start(
    args: string[],
  ): Promise<{ child: ChildProcess; url?: string; out: () => string; err: () => string; exited: Promise<number> }> {
    if (!existsSync(tsx)) throw new Error('tsx not installed');
    // No Redis at all: the command must not need one.
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATA_DIR: testDir('tessera-sbx-'),
    };
    const child = spawn(tsx, [join(root, 'src', 'cli', 'main.ts'), 'sandbox-provider', ...args], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.push(child);
    let out = '';
    let err = '';
    const exited = new Promise<number>((res) => child.once('close', (code) => res(code ?? -1)));
    return new Promise((done, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`no URL printed within 20 s; stdout: ${out} stderr: ${err}`)),
        20_000,
      );
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /sandbox payment provider on (http:\/\/\S+)/.exec(out);
        if (m && out.includes('Ctrl-C')) {
          clearTimeout(timer);
          done({ child, url: m[1], out: () => out, err: () => err, exited });
        }
      });
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.once('error', fail);
      void exited.then(() => {
        clearTimeout(timer);
        done({ child, out: () => out, err: () => err, exited });
      });
    });
  }

  it('serves the provider API on the printed URL, lists its members, and stops on SIGINT', async () => {
    const s = await start(['--port', '0']);
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(s.out()).toContain(`PROVIDER_URL=${s.url}`);
    expect(s.out()).toMatch(/Alice Traveller\s+card 4000000000000002\s+card PIN 1234/);
    expect(s.out()).toContain('commission 250 bp');

    const none = await fetch(`${s.url}/v1/payments/x`);
    expect(none.status).toBe(404);
    expect(await none.json()).toEqual({ state: 'none' });
    const auth = await fetch(`${s.url}/v1/authorize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        reference: 'r1',
        card: '4000000000000002',
        cardPin: '1234',
        amount: 2_000_000,
        currency: 'EUR',
      }),
    });
    expect(auth.status).toBe(200);
    expect(await auth.json()).toMatchObject({ status: 'approved' });
    const cap = await fetch(`${s.url}/v1/capture`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reference: 'r1' }),
    });
    expect(await cap.json()).toEqual({ status: 'captured', commission: 50_000 });

    s.child.kill('SIGINT');
    expect(await s.exited).toBe(0);
    expect(s.out()).toContain('sandbox payment provider stopped');
  });

  it('takes its members, commission and faults from the flags', async () => {
    const members = join(testDir('tessera-sbx-m-'), 'members.json');
    writeFileSync(
      members,
      JSON.stringify([{ name: 'Dora Test', card: '4111111111111111', pin: '9999', limit: 3_000_000 }]),
    );
    const s = await start(['--port', '0', '--members', members, '--commission-bp', '1000', '--latency-ms', '150']);
    expect(s.out()).toMatch(/Dora Test\s+card 4111111111111111\s+card PIN 9999\s+0\.00 \/ 3\.00/);
    expect(s.out()).not.toContain('Alice');
    expect(s.out()).toContain('commission 1000 bp (10.00%), latency 150 ms');
    const post = (path: string, body: object): Promise<Response> =>
      fetch(`${s.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const t0 = Date.now();
    expect(
      await (
        await post('/v1/authorize', {
          reference: 'a',
          card: '4000000000000002',
          cardPin: '1234',
          amount: 1,
          currency: 'EUR',
        })
      ).json(),
    ).toEqual({ status: 'declined', reason: 'not_member' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(
      await (
        await post('/v1/authorize', {
          reference: 'b',
          card: '4111111111111111',
          cardPin: '9999',
          amount: 4_000_000,
          currency: 'EUR',
        })
      ).json(),
    ).toEqual({ status: 'declined', reason: 'insufficient_funds' });
    expect(
      (
        await post('/v1/authorize', {
          reference: 'c',
          card: '4111111111111111',
          cardPin: '9999',
          amount: 2_000_000,
          currency: 'EUR',
        })
      ).status,
    ).toBe(200);
    expect(await (await post('/v1/capture', { reference: 'c' })).json()).toEqual({
      status: 'captured',
      commission: 200_000,
    });
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  });

  // Run in this process, as the command's refusals come before it listens (a command that listened
  // would wait for Ctrl-C and never return): three cold starts of tsx took over 30 s under load.
  it('refuses a bad members file (exit 1) and bad flags (exit 2) before listening', async () => {
    const dir = testDir('tessera-sbx-b-');
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify([{ name: 'Eve', card: '4000000000000003', pin: '1234', limit: 1 }]));
    const r = await cli('sandbox-provider', '--port', '0', '--members', bad);
    expect(r.code).toBe(1);
    expect(r.err).toContain('member #1: card must be 12 to 19 digits (a string) with a valid Luhn check digit');
    expect(r.out).not.toContain('sandbox payment provider on');
    const numericPin = join(dir, 'pin.json');
    writeFileSync(
      numericPin,
      JSON.stringify({ members: [{ name: 'Eve', card: '4000000000000002', pin: 1234, limit: 1 }] }),
    );
    const p = await cli('sandbox-provider', '--port', '0', '--members', numericPin);
    expect(p.code).toBe(1);
    expect(p.err).toContain('pin must be a string');
    const f = await cli('sandbox-provider', '--port', '0', '--fail-rate', '2');
    expect(f.code).toBe(2);
    expect(f.err).toContain('--fail-rate must be between 0 and 1');
  });
});
