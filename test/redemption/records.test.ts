/**
 * What redemption leaves behind: one record per redemption and reversal in the
 * ID's bucket stream, exported by `tessera export redemptions` as CSV and
 * NDJSON; and the redemption catalog as operators load it (JSON and CSV).
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putItems, putProducts, readCatalog } from '../../src/catalog/store';
import type { Gateway } from '../../src/gateway/server';
import { keys } from '../../src/redis/keys';
import { cli, cliEnv, harnessFile, lines, setEnv } from '../support/cli';
import { gateway, seedCatalog, soldIds, startHarness, uniq, type Harness } from '../support/harness';
import { balanceOf, hashOf } from '../support/redis';
import { sleep, until } from '../support/wait';
import { Scanner } from '../support/ws-client';
import {
  allRecords,
  DAY,
  loadRedemptionCatalog,
  PRICE,
  recordsOf,
  scannerToken,
  VENUE,
  WALLET_FACE,
  type Catalog,
  type Rec,
} from './fixtures';

let h: Harness;
let gw: Gateway;
let cat: Catalog;
let restoreEnv: (() => void) | undefined;

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h);
  cat = await loadRedemptionCatalog(h);
  gw = await gateway(h);
  restoreEnv = setEnv(cliEnv(h));
});
afterAll(async () => {
  restoreEnv?.();
  await gw?.close();
  await h?.stop();
});

const sold = async (p: Parameters<typeof soldIds>[1]): Promise<string> => (await soldIds(h, p, 1))[0]!;
const file = (name: string, text: string): string => harnessFile(h, name, text);
const EXPORT_FIELDS = [
  'record',
  'time',
  'type',
  'scan',
  'scanner',
  'id',
  'kind',
  'action',
  'venue',
  'gate',
  'item',
  'qty',
  'amount',
  'before',
  'after',
  'reason',
  'at',
];

describe('records', () => {
  it('every redemption and reversal is one record with scan, scanner, ID hash, venue, gate, item, qty, amount, before/after, time', async () => {
    const north = await scannerToken(h, { venue: VENUE, gate: 'north' });
    const s = await Scanner.connect(gw.port, north.tok);
    const t = await sold(cat.reentry);
    const w = await sold(cat.wallet);
    const sv = await sold(cat.spa);
    const t0 = Date.now();
    const sc = { in: uniq('in'), out: uniq('out'), back: uniq('back'), beer: uniq('beer'), spa: uniq('spa') };
    await s.redeem({ scan: sc.in, id: t, gate: 'ignored' });
    await s.redeem({ scan: sc.out, id: t, dir: 'out' });
    await s.redeem({ scan: sc.back, id: t });
    await s.redeem({ scan: sc.beer, id: w, item: 'beer', qty: 2 });
    await s.redeem({ scan: sc.spa, id: sv, item: 'massage' });
    await s.reverse(sc.beer, 'spilled');
    await s.reverse(sc.spa);
    // Refusals, retries, validations and second reversals leave no record.
    await s.redeem({ scan: uniq(), id: t });
    await s.redeem({ scan: sc.beer, id: w, item: 'beer', qty: 2 });
    await s.reverse(sc.beer, 'again');
    await s.validate({ id: w, item: 'water' });
    await s.close();
    const t1 = Date.now();

    const common = {
      streamId: expect.any(String),
      scanner: north.name,
      venue: VENUE,
      gate: 'north',
      time: expect.any(String),
    };
    const tr = await recordsOf(h, t);
    expect(tr).toEqual([
      {
        ...common,
        type: 'redeem',
        scan: sc.in,
        id: hashOf(h, t),
        kind: 'entry',
        action: 'entry',
        item: '',
        qty: '1',
        amount: '1',
        before: '1',
        after: '0',
      },
      {
        ...common,
        type: 'redeem',
        scan: sc.out,
        id: hashOf(h, t),
        kind: 'entry',
        action: 'exit',
        item: '',
        qty: '1',
        amount: '0',
        before: '0',
        after: '0',
      },
      {
        ...common,
        type: 'redeem',
        scan: sc.back,
        id: hashOf(h, t),
        kind: 'entry',
        action: 'reentry',
        item: '',
        qty: '1',
        amount: '0',
        before: '0',
        after: '0',
      },
    ]);
    const wr = await recordsOf(h, w);
    const afterBeer = WALLET_FACE - 2 * PRICE.beer;
    expect(wr).toEqual([
      {
        ...common,
        type: 'redeem',
        scan: sc.beer,
        id: hashOf(h, w),
        kind: 'goods',
        action: 'spend',
        item: 'beer',
        qty: '2',
        amount: String(2 * PRICE.beer),
        before: String(WALLET_FACE),
        after: String(afterBeer),
      },
      {
        ...common,
        type: 'reverse',
        scan: sc.beer,
        id: hashOf(h, w),
        kind: 'goods',
        action: 'spend',
        item: 'beer',
        qty: '2',
        amount: String(-2 * PRICE.beer),
        before: String(afterBeer),
        after: String(WALLET_FACE),
        reason: 'spilled',
      },
    ]);
    const sr = await recordsOf(h, sv);
    expect(sr).toEqual([
      {
        ...common,
        type: 'redeem',
        scan: sc.spa,
        id: hashOf(h, sv),
        kind: 'service',
        action: 'use',
        item: 'massage',
        qty: '1',
        amount: '1',
        before: '2',
        after: '1',
      },
      {
        ...common,
        type: 'reverse',
        scan: sc.spa,
        id: hashOf(h, sv),
        kind: 'service',
        action: 'use',
        item: 'massage',
        qty: '1',
        amount: '-1',
        before: '1',
        after: '2',
        reason: '',
      },
    ]);
    for (const r of [...tr, ...wr, ...sr]) {
      expect(Number(r.time)).toBeGreaterThanOrEqual(t0);
      expect(Number(r.time)).toBeLessThanOrEqual(t1);
      // The record never holds the clear ID.
      expect(Object.values(r).some((v) => v.includes(t) || v.includes(w) || v.includes(sv))).toBe(false);
    }
    // Records are in the ID's own bucket stream, and the balance agrees with them.
    expect(await h.r.xlen(keys.redemptions(h.ctx.ids.hash(w).bucket))).toBeGreaterThanOrEqual(2);
    expect(await balanceOf(h, w)).toBe(WALLET_FACE);
    expect(await balanceOf(h, sv)).toBe(2);
  });
});

describe('export redemptions', () => {
  /** Every record as the export writes it: the export's columns, '' where a record has no such field. */
  const exported = (recs: Rec[]): Record<string, string>[] =>
    recs
      .map(({ streamId, ...r }) =>
        Object.fromEntries(
          EXPORT_FIELDS.map((f) => [f, f === 'record' ? streamId : ((r as Record<string, string>)[f] ?? '')]),
        ),
      )
      .sort((a, b) => a.record!.localeCompare(b.record!));
  const byRecord = (rows: Record<string, string>[]): Record<string, string>[] =>
    [...rows].sort((a, b) => a.record!.localeCompare(b.record!));

  it('writes every redemption and reversal as CSV and NDJSON', async () => {
    const s = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
    const w = await sold(cat.wallet);
    const sc = uniq('x');
    await s.redeem({ scan: sc, id: w, item: 'water', qty: 3 });
    await s.reverse(sc, 'comma, "quoted" reason');
    await s.redeem({ scan: uniq(), id: await sold(cat.ticket), gate: 'east' });
    await s.close();
    const recs = await allRecords(h);
    expect(recs.length).toBeGreaterThanOrEqual(3);

    const csv = await cli('export', 'redemptions', '--format', 'csv');
    expect(csv.code).toBe(0);
    expect(csv.err).toBe(`exported ${recs.length} record(s)\n`);
    expect(lines(csv.out)[0]).toBe(EXPORT_FIELDS.join(','));
    const rows = parse<Record<string, string>>(csv.out, { columns: true });
    expect(byRecord(rows)).toEqual(exported(recs));
    // In time order.
    const times = rows.map((r) => Number(r.time));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    const rev = rows.find((r) => r.type === 'reverse' && r.scan === sc);
    expect(rev).toMatchObject({
      id: hashOf(h, w),
      amount: String(-3 * PRICE.water),
      before: String(WALLET_FACE - 3 * PRICE.water),
      after: String(WALLET_FACE),
      reason: 'comma, "quoted" reason',
    });

    const nd = await cli('export', 'redemptions', '--format', 'ndjson');
    expect(nd.code).toBe(0);
    expect(nd.err).toBe(`exported ${recs.length} record(s)\n`);
    const objs = lines(nd.out).map((l) => JSON.parse(l) as Record<string, string>);
    expect(objs).toHaveLength(recs.length);
    const want = new Map(recs.map(({ streamId, ...r }) => [streamId, { record: streamId, ...r }]));
    for (const o of objs) expect(o).toEqual(want.get(o.record!));
  });

  it('a reversal reason holding the packing separator comes back whole; records written with named fields by earlier versions are exported too', async () => {
    const s = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
    const w = await sold(cat.wallet);
    const sc = uniq('bar');
    await s.redeem({ scan: sc, id: w, item: 'water' });
    await s.reverse(sc, 'till|2 | jammed');
    await s.close();
    const { bucket } = h.ctx.ids.hash(w);
    const legacy = {
      type: 'redeem',
      scan: uniq('old'),
      scanner: 'old-till',
      id: hashOf(h, w),
      kind: 'goods',
      action: 'spend',
      venue: VENUE,
      gate: '',
      item: 'water',
      qty: '1',
      amount: '7',
      before: '100',
      after: '93',
      time: String(Date.now()),
    };
    const legacyId = await h.r.xadd(keys.redemptions(bucket), '*', ...Object.entries(legacy).flat());

    const nd = await cli('export', 'redemptions', '--format', 'ndjson');
    expect(nd.code).toBe(0);
    const objs = lines(nd.out).map((l) => JSON.parse(l) as Record<string, string>);
    expect(objs.find((o) => o.type === 'reverse' && o.scan === sc)).toMatchObject({
      reason: 'till|2 | jammed',
      amount: String(-PRICE.water),
      after: String(WALLET_FACE),
    });
    expect(objs.find((o) => o.scan === legacy.scan)).toEqual({ record: `${bucket}/${legacyId}`, ...legacy });
    await h.r.xdel(keys.redemptions(bucket), legacyId!);
  });

  it('--out writes a file readable by the operator only; --since/--until select by time', async () => {
    const s = await Scanner.connect(gw.port, (await scannerToken(h)).tok);
    const id = await sold(cat.ticket3);
    await s.redeem({ scan: uniq(), id });
    await sleep(5);
    const mid = Date.now();
    await sleep(5);
    const late = uniq('late');
    await s.redeem({ scan: late, id });
    await s.close();

    const out = join(h.dir, `red-${uniq()}.ndjson`);
    const r = await cli('export', 'redemptions', '--format', 'ndjson', '--out', out);
    expect(r.code).toBe(0);
    expect(r.out).toBe('');
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(lines(readFileSync(out, 'utf8'))).toHaveLength((await allRecords(h)).length);

    const since = await cli('export', 'redemptions', '--format', 'ndjson', '--since', String(mid));
    expect(lines(since.out).map((l) => (JSON.parse(l) as { scan: string }).scan)).toEqual([late]);
    const before = await cli('export', 'redemptions', '--format', 'ndjson', '--until', String(mid));
    expect(lines(before.out).some((l) => (JSON.parse(l) as { scan: string }).scan === late)).toBe(false);
    expect(lines(before.out)).toHaveLength((await allRecords(h)).length - 1);
  });
});

describe('catalog', () => {
  it('putProducts fills the defaults of entry, goods and service products and turns instants into ms', async () => {
    expect(cat.ticket).toEqual({
      name: 'ticket',
      kind: 'entry',
      currency: 'EUR',
      price: 50_000_000,
      entries: 1,
      venues: [VENUE],
      gates: [],
      reentry: false,
      expiryDays: 0,
    });
    // ISO strings in, milliseconds out (loaded as now - 2 days .. now - 1 day).
    expect(typeof cat.past.validFrom).toBe('number');
    expect((cat.past.validUntil as number) - (cat.past.validFrom as number)).toBe(DAY);
    expect(cat.wallet).toEqual({
      name: 'wallet',
      kind: 'goods',
      currency: 'EUR',
      face: WALLET_FACE,
      price: WALLET_FACE,
      venues: [],
      expiryDays: 365,
    });
    expect(cat.spa).toEqual({
      name: 'spa',
      kind: 'service',
      currency: 'EUR',
      price: 80_000_000,
      service: 'massage',
      uses: 2,
      venues: [VENUE],
      expiryDays: 365,
    });
    const stored = await readCatalog(h.r);
    expect(stored.products.get('gated')).toEqual(cat.gated);
    expect(stored.items.get(`${VENUE}/beer`)).toEqual({
      venue: VENUE,
      item: 'beer',
      price: PRICE.beer,
      title: 'Beer 0.5l',
    });
  });

  it('refuses products and items that make no sense', async () => {
    const entry = { name: 'bad', kind: 'entry', currency: 'EUR', price: 1 };
    await expect(putProducts(h.ctx.redis, [entry])).rejects.toThrow(/venues/);
    await expect(
      putProducts(h.ctx.redis, [{ ...entry, venues: [VENUE], validFrom: 2000, validUntil: 1000 }]),
    ).rejects.toThrow(/validUntil/);
    await expect(putProducts(h.ctx.redis, [{ ...entry, venues: [VENUE], entries: 0 }])).rejects.toThrow(/entries/);
    await expect(
      putProducts(h.ctx.redis, [{ name: 'bad', kind: 'service', currency: 'EUR', price: 1, uses: 1 }]),
    ).rejects.toThrow(/service/);
    await expect(
      putProducts(h.ctx.redis, [{ name: 'bad', kind: 'goods', currency: 'EUR', price: 1, face: 0 }]),
    ).rejects.toThrow(/face/);
    await expect(putItems(h.ctx.redis, [{ venue: VENUE, item: 'free', price: 0 }])).rejects.toThrow(/price/);
    expect(await h.r.hget(keys.products, 'bad')).toBeNull();
    expect(await h.r.hget(keys.items, `${VENUE}/free`)).toBeNull();
  });

  it('catalog-load from CSV: entry, goods and service products (lists separated by ;) and venue items; a running gateway redeems with them', async () => {
    const products = file(
      'red-products.csv',
      [
        'name,kind,currency,price,face,entries,venues,gates,validFrom,validUntil,reentry,service,uses,expiryDays,title',
        'csvticket,entry,EUR,2500000,,2,arena;stage,north;south,2020-01-01T00:00:00Z,2099-01-01T00:00:00Z,yes,,,,Two days',
        'csvwallet,goods,EUR,20000000,20000000,,arena;stage,,,,,,,30,',
        'csvspa,service,EUR,9000000,,,arena,,,,,sauna,5,,',
        '',
      ].join('\n'),
    );
    const items = file(
      'red-items.csv',
      'venue,item,price,title\narena,pretzel,3500000,Pretzel\nstage,pretzel,4000000,\n',
    );
    const r = await cli('catalog-load', '--products', products, '--items', items);
    expect(r).toEqual({ code: 0, out: 'loaded 2 item(s)\nloaded 3 product(s)\n', err: '' });
    const c = await readCatalog(h.r);
    expect(c.products.get('csvticket')).toEqual({
      name: 'csvticket',
      kind: 'entry',
      title: 'Two days',
      currency: 'EUR',
      price: 2_500_000,
      entries: 2,
      venues: ['arena', 'stage'],
      gates: ['north', 'south'],
      validFrom: Date.parse('2020-01-01T00:00:00Z'),
      validUntil: Date.parse('2099-01-01T00:00:00Z'),
      reentry: true,
      expiryDays: 0,
    });
    expect(c.products.get('csvwallet')).toEqual({
      name: 'csvwallet',
      kind: 'goods',
      currency: 'EUR',
      price: 20_000_000,
      face: 20_000_000,
      venues: ['arena', 'stage'],
      expiryDays: 30,
    });
    expect(c.products.get('csvspa')).toEqual({
      name: 'csvspa',
      kind: 'service',
      currency: 'EUR',
      price: 9_000_000,
      service: 'sauna',
      uses: 5,
      venues: ['arena'],
      expiryDays: 365,
    });
    expect(c.items.get('arena/pretzel')).toEqual({
      venue: 'arena',
      item: 'pretzel',
      price: 3_500_000,
      title: 'Pretzel',
    });
    expect(c.items.get('stage/pretzel')).toEqual({ venue: 'stage', item: 'pretzel', price: 4_000_000 });

    // Minted and sold through the CLI, redeemed at the running gateway (refreshed by the change announcement).
    await until(() => gw.catalog.item('stage', 'pretzel') !== undefined);
    const mintOne = async (product: string): Promise<string> => {
      const m = await cli('mint', '--product', product, '--count', '1');
      expect(m.code).toBe(0);
      const id = lines(m.out)[0]!;
      expect((await cli('activate', id)).code).toBe(0);
      return id;
    };
    const [ticket, wallet, spa] = [await mintOne('csvticket'), await mintOne('csvwallet'), await mintOne('csvspa')];
    const stage = await Scanner.connect(gw.port, (await scannerToken(h, { venue: 'stage', gate: 'south' })).tok);
    const arena = await Scanner.connect(gw.port, (await scannerToken(h, { venue: 'arena', gate: 'east' })).tok, {
      binary: true,
    });
    expect(await arena.redeem({ scan: 'c1', id: ticket })).toMatchObject({ op: 'refused', reason: 'wrong_gate' });
    expect(await stage.redeem({ scan: 'c2', id: ticket })).toEqual({
      op: 'redeemed',
      scan: 'c2',
      kind: 'entry',
      action: 'entry',
      amount: 1,
      entriesLeft: 1,
    });
    expect(await stage.redeem({ scan: 'c3', id: wallet, item: 'pretzel', qty: 2 })).toEqual({
      op: 'redeemed',
      scan: 'c3',
      kind: 'goods',
      action: 'spend',
      amount: 8_000_000,
      valueLeft: 12_000_000,
      item: 'pretzel',
    });
    expect(await arena.redeem({ scan: 'c4', id: wallet, item: 'pretzel' })).toEqual({
      op: 'redeemed',
      scan: 'c4',
      kind: 'goods',
      action: 'spend',
      amount: 3_500_000,
      valueLeft: 8_500_000,
      item: 'pretzel',
    });
    expect(await arena.redeem({ scan: 'c5', id: spa, item: 'sauna' })).toEqual({
      op: 'redeemed',
      scan: 'c5',
      kind: 'service',
      action: 'use',
      amount: 1,
      usesLeft: 4,
      item: 'sauna',
    });
    expect(await stage.redeem({ scan: 'c6', id: spa })).toMatchObject({ op: 'refused', reason: 'wrong_venue' });
    await Promise.all([stage.close(), arena.close()]);
  });
});
