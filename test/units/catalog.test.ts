import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPlansFile, readProductsFile } from '../../src/catalog/files';
import { isOnPublicSale } from '../../src/catalog/schema';
import { putPlans, putProducts, readCatalog } from '../../src/catalog/store';
import { productTerms, TERM_FIELDS } from '../../src/catalog/terms';
import { keys } from '../../src/redis/keys';
import { startHarness, type Harness } from '../support/harness';

let dir: string;
let h: Harness;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-catalog-'));
  h = await startHarness();
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await h?.stop();
});

const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

const CARD = {
  name: 'card5',
  kind: 'talk',
  currency: 'EUR',
  face: 5_000_000,
  price: 4_500_000,
  plan: 'intl',
  thresholds: [120, 30],
  expiryDays: 90,
  maxCalls: 2,
};

describe('catalog files', () => {
  it('products from CSV: numbers coerced, thresholds split, blanks take the defaults', async () => {
    const p = file(
      'products.csv',
      [
        'name,kind,currency,face,price,plan,thresholds,expiryDays,maxCalls,title',
        '# a comment line',
        'card5,talk,EUR,5000000,4500000,intl,120;30,90,2,Five euro card',
        'card10,talk,USD,10000000,9000000,intl,300 60 10,,,',
        '',
      ].join('\n'),
    );
    const rows = readProductsFile(p);
    expect(rows).toHaveLength(2);
    const stored = await putProducts(h.ctx.redis, rows);
    expect(stored).toEqual([
      { ...CARD, title: 'Five euro card' },
      {
        name: 'card10',
        kind: 'talk',
        currency: 'USD',
        face: 10_000_000,
        price: 9_000_000,
        plan: 'intl',
        thresholds: [300, 60, 10],
        expiryDays: 180,
        maxCalls: 1,
      },
    ]);
    const cat = await readCatalog(h.r);
    expect(cat.products.get('card10')).toEqual(stored[1]);
    expect(cat.products.get('card5')).toEqual(stored[0]);
  });

  it('the webShop column puts a product on public sale; blank or absent, it is not', async () => {
    const p = file(
      'channels.csv',
      [
        'name,kind,currency,face,price,plan,webShop',
        'web5,talk,EUR,5000000,5000000,intl,yes',
        'staff,talk,EUR,5000000,0,intl,',
        'box5,talk,EUR,5000000,5000000,intl,0',
      ].join('\n'),
    );
    const stored = await putProducts(h.ctx.redis, readProductsFile(p));
    expect(stored.map((x) => [x.name, x.webShop])).toEqual([
      ['web5', true],
      ['staff', undefined],
      ['box5', false],
    ]);
    expect(stored.filter(isOnPublicSale).map((x) => x.name)).toEqual(['web5']);
    await expect(putProducts(h.ctx.redis, [{ ...CARD, webShop: 'yes' }])).rejects.toThrow(/webShop/);
  });

  it('products from JSON: an array, or an object holding "products"', () => {
    expect(readProductsFile(file('p1.json', JSON.stringify([CARD])))).toEqual([CARD]);
    expect(readProductsFile(file('p2.json', JSON.stringify({ products: [CARD] })))).toEqual([CARD]);
    // Content sniffing: JSON in a file without the extension.
    expect(readProductsFile(file('p3.txt', `  ${JSON.stringify([CARD])}`))).toEqual([CARD]);
    expect(() => readProductsFile(file('p4.json', JSON.stringify({ items: [CARD] })))).toThrow(
      /expected an array or \{"products": \[\.\.\.\]\}/,
    );
    expect(() => readProductsFile(file('p5.json', '[{"name":'))).toThrow();
  });

  it('rate plans from CSV: rows grouped by plan, empty prefix means everything, fee defaults to 0', async () => {
    const p = file(
      'rates.csv',
      ['plan,prefix,rate,fee', 'intl,,100,', 'intl,44,200,0', 'intl,449,1000,5000', 'local,1,5,'].join('\n'),
    );
    const plans = readPlansFile(p);
    const stored = await putPlans(h.ctx.redis, plans);
    expect(stored).toEqual([
      {
        name: 'intl',
        rates: [
          { prefix: '', rate: 100, fee: 0 },
          { prefix: '44', rate: 200, fee: 0 },
          { prefix: '449', rate: 1000, fee: 5000 },
        ],
      },
      { name: 'local', rates: [{ prefix: '1', rate: 5, fee: 0 }] },
    ]);
    expect((await readCatalog(h.r)).plans.get('intl')).toEqual(stored[0]);
  });

  it('rate plans from JSON', () => {
    const plan = { name: 'j', rates: [{ prefix: '33', rate: 7 }] };
    expect(readPlansFile(file('r1.json', JSON.stringify({ plans: [plan] })))).toEqual([plan]);
    expect(readPlansFile(file('r2.json', JSON.stringify([plan])))).toEqual([plan]);
  });

  it('CSV cells become numbers only as plain digits: hex, exponents and words are refused, not read', async () => {
    for (const [face, thresholds] of [
      ['0x10', '60'],
      ['1e3', '60'],
      ['ten', '60'],
      ['1000', '0x3c'],
    ]) {
      const p = file(
        'odd.csv',
        `name,kind,currency,face,price,plan,thresholds\nodd,talk,EUR,${face},1,intl,${thresholds}\n`,
      );
      await expect(putProducts(h.ctx.redis, readProductsFile(p))).rejects.toThrow(/must be integer/);
    }
    expect(await h.r.hget(keys.products, 'odd')).toBeNull();
  });

  it('a JSON file may start with a byte order mark; one that is no JSON is named in the message', () => {
    expect(readProductsFile(file('bom.json', `\uFEFF${JSON.stringify([CARD])}`))).toEqual([CARD]);
    const broken = file('broken.json', '[{"name": card5}]');
    expect(() => readProductsFile(broken)).toThrow(`${broken} is not valid JSON`);
  });

  it('a CSV header naming a column twice is refused, not read as its last column', () => {
    expect(() => readPlansFile(file('r4.csv', 'plan,prefix,rate,fee,rate\np,44,200,0,2\n'))).toThrow(
      /names the column "rate" twice/,
    );
    expect(() => readProductsFile(file('p4.csv', 'name,kind,face,face\nx,talk,1,2\n'))).toThrow(/"face" twice/);
  });

  it('a JSON object naming a field twice is refused with its line, not read as its last value', () => {
    const twice = file('p5.json', '[\n  {"name": "card5", "price": 1000000,\n   "price": 100000}\n]');
    expect(() => readProductsFile(twice)).toThrow(`${twice} line 3: "price" is given twice in one object`);
    const nested = file('r5.json', '{"plans": [{"name": "p", "rates": [{"prefix": "44", "rate": 1, "rate": 2}]}]}');
    expect(() => readPlansFile(nested)).toThrow(/"rate" is given twice/);
    // The same name in two objects is no repeat.
    expect(readProductsFile(file('p6.json', JSON.stringify([CARD, { ...CARD, name: 'other' }])))).toHaveLength(2);
  });

  it('a rates CSV row without a plan is refused', () => {
    expect(() => readPlansFile(file('r3.csv', 'plan,prefix,rate,fee\n,44,200,0\n'))).toThrow(/a row without a plan/);
  });
});

describe('putProducts / putPlans refuse invalid records with a message', () => {
  const version = async (): Promise<number> => Number(await h.r.get(keys.catalogVersion));

  it('a duplicate prefix in a plan; nothing of the batch is written', async () => {
    const v0 = await version();
    await expect(
      putPlans(h.ctx.redis, [
        { name: 'fine', rates: [{ prefix: '1', rate: 5 }] },
        {
          name: 'dup',
          rates: [
            { prefix: '44', rate: 200 },
            { prefix: '44', rate: 300 },
          ],
        },
      ]),
    ).rejects.toThrow("rate plan dup: prefix '44' appears twice");
    expect(await h.r.hget(keys.plans, 'fine')).toBeNull();
    expect(await h.r.hget(keys.plans, 'dup')).toBeNull();
    expect(await version()).toBe(v0);
  });

  it.each([
    [
      'a negative rate',
      { name: 'neg', rates: [{ prefix: '44', rate: -5 }] },
      /^rate plan neg: prefix '44': rate must be >= 1$/,
    ],
    [
      'a zero rate',
      { name: 'zero', rates: [{ prefix: '44', rate: 0 }] },
      /^rate plan zero: prefix '44': rate must be >= 1$/,
    ],
    [
      'a prefix with letters',
      { name: 'abc', rates: [{ prefix: '44a', rate: 5 }] },
      /^rate plan abc: rates\.0\.prefix must match pattern/,
    ],
    [
      'a negative fee',
      { name: 'fee', rates: [{ prefix: '44', rate: 5, fee: -1 }] },
      /^rate plan fee: prefix '44': fee must be >= 0$/,
    ],
    ['no rates', { name: 'empty', rates: [] }, /^rate plan empty: rates must NOT have fewer than 1 items$/],
    [
      'an unknown field',
      { name: 'x', rates: [{ prefix: '1', rate: 5, cost: 3 }] },
      /^rate plan x: prefix '1': has a field it does not take: "cost"$/,
    ],
  ])('a plan with %s', async (_what, plan, message) => {
    const v0 = await version();
    await expect(putPlans(h.ctx.redis, [plan])).rejects.toThrow(message);
    expect(await h.r.hget(keys.plans, plan.name)).toBeNull();
    expect(await version()).toBe(v0);
  });

  it.each([
    [
      'an unknown kind',
      { ...CARD, name: 'k1', kind: 'coffee' },
      /^product #2: kind must be one of talk, entry, goods, service/,
    ],
    ['a negative price', { ...CARD, name: 'k2', price: -1 }, /price must be >= 0/],
    ['a zero face value', { ...CARD, name: 'k3', face: 0 }, /face must be >= 1/],
    ['a lower-case currency', { ...CARD, name: 'k4', currency: 'eur' }, /currency must match pattern/],
    [
      'a missing plan',
      { name: 'k5', kind: 'talk', currency: 'EUR', face: 1, price: 1 },
      /must have required property 'plan'/,
    ],
    ['a bad name', { ...CARD, name: 'has space' }, /name must match pattern/],
    ['a fractional face', { ...CARD, name: 'k6', face: 10.5 }, /face must be integer/],
    // JSON's own types are kept: nothing is coerced into a number, least of all a missing price into 0.
    ['a null price', { ...CARD, name: 'k8', price: null }, /price must be integer/],
    ['a face of true', { ...CARD, name: 'k9', face: true }, /face must be integer/],
    ['a face written as hex text', { ...CARD, name: 'k10', face: '0x10' }, /face must be integer/],
    ['a price written as text', { ...CARD, name: 'k11', price: '1000' }, /price must be integer/],
    [
      'the name of one before it',
      { ...CARD, name: 'ok-first' },
      /^product #2: the product ok-first is given twice \(also product #1\)/,
    ],
  ])('a product with %s', async (_what, product, message) => {
    const v0 = await version();
    // A valid record first: the batch is all or nothing, so it is not written either.
    await expect(putProducts(h.ctx.redis, [{ ...CARD, name: 'ok-first' }, product])).rejects.toThrow(message);
    expect(await h.r.hget(keys.products, 'ok-first')).toBeNull();
    expect(await h.r.hget(keys.products, String(product.name))).toBeNull();
    expect(await version()).toBe(v0);
  });

  // A ticket's validity is a moment: no date alone, no time local to the machine loading it.
  it.each(['2026-12-31', '2026-12-31T23:59:59', 'next friday', '2027-02-29T23:59:59Z', '2027-04-30T24:00:00+02:00'])(
    'a ticket valid until %s',
    async (validUntil) => {
      const ticket = { name: 'ticket-v', kind: 'entry', currency: 'EUR', price: 1, venues: ['arena'], validUntil };
      await expect(putProducts(h.ctx.redis, [ticket])).rejects.toThrow(
        /validUntil validFrom\/validUntil must be ms since 1970 or date-times with their offset/,
      );
      expect(await h.r.hget(keys.products, 'ticket-v')).toBeNull();
    },
  );

  it('the record number in the message points at the bad record', async () => {
    await expect(putProducts(h.ctx.redis, [CARD, { ...CARD, name: 'k7', face: 0 }])).rejects.toThrow(
      /^product #2: face must be >= 1/,
    );
  });

  it('a valid load bumps the version and announces it', async () => {
    const sub = h.r.duplicate();
    const got = new Promise<string>((r) => sub.on('message', (_c: string, m: string) => r(m)));
    await sub.subscribe(keys.catalogChannel);
    const v0 = await version();
    await putProducts(h.ctx.redis, [{ ...CARD, name: 'k8' }]);
    expect(await version()).toBe(v0 + 1);
    expect(await got).toBe(String(v0 + 1));
    sub.disconnect();
  });
});

describe('product terms', () => {
  it('are the fields the scripts read from the terms version, in TypeScript and in Lua alike', () => {
    const lua = readFileSync(join(__dirname, '../../lua/includes/id_fields.lua'), 'utf8');
    const table = /local ID_TERMS = \{([^}]*)\}/.exec(lua)?.[1] ?? '';
    const inLua = [...table.matchAll(/(?:\['(\w+)'\]|(\w+)) = true/g)].map((m) => m[1] ?? m[2]);
    expect(new Set(inLua)).toEqual(TERM_FIELDS);
    const base = { currency: 'EUR', price: 1, expiryDays: 30, venues: ['v1'] };
    const products = [
      { ...base, name: 't', kind: 'talk', face: 1, plan: 'p', thresholds: [60], maxCalls: 1 },
      { ...base, name: 'e', kind: 'entry', entries: 1, gates: [], reentry: true },
      { ...base, name: 'g', kind: 'goods', face: 1 },
      { ...base, name: 's', kind: 'service', uses: 1, service: 'wash' },
      { ...base, name: 'r', kind: 'recharge', face: 1, into: ['t'] },
    ] as const;
    for (const p of products) {
      const fields = productTerms(p as Parameters<typeof productTerms>[0]).filter((_, i) => i % 2 === 0);
      for (const f of fields) expect(TERM_FIELDS.has(String(f)), `${p.kind} ${String(f)}`).toBe(true);
    }
  });
});
