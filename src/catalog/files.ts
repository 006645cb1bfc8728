/**
 * Catalog files as operators write them: JSON (an array, or an object holding
 * one) or CSV with a header row. Values are validated by the catalog store.
 *
 * products.csv: name,kind,currency,face,price,plan,thresholds,expiryDays,maxCalls,title,webShop
 *               (thresholds separated by spaces or semicolons, e.g. "300;60;10"; webShop 1/true/yes
 *               puts the product on public sale)
 * rates.csv:    plan,prefix,rate,fee
 * items.csv:    venue,item,price,title
 * Entry products in CSV list venues and gates separated like thresholds; talk products their
 * topupAmounts, recharge products their `into`, the same way (topup: 1/true/yes, else false).
 */
import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';

type Row = Record<string, string>;

function readRows(file: string): { json?: unknown; rows?: Row[] } {
  const text = readFileSync(file, 'utf8');
  if (/\.json$/i.test(file) || /^\s*[[{]/.test(text)) return { json: JSON.parse(text) };
  return { rows: parse<Row>(text, { columns: true, skip_empty_lines: true, trim: true, comment: '#' }) };
}

const arrayIn = (json: unknown, field: string): unknown[] => {
  if (Array.isArray(json)) return json;
  const inner = (json as Record<string, unknown> | null)?.[field];
  if (Array.isArray(inner)) return inner;
  throw new Error(`expected an array or {"${field}": [...]}`);
};

/** Blank cells are absent fields (so schema defaults apply). */
const blankToUndefined = (row: Row): Record<string, string | undefined> =>
  Object.fromEntries(Object.entries(row).filter(([, v]) => v !== ''));

const flag = (v: string | undefined): boolean | undefined => (v === undefined ? undefined : /^(1|true|yes)$/i.test(v));

const defined = (o: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

export function readProductsFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'products');
  return rows!.map((r) => {
    const row = blankToUndefined(r);
    const list = (v: string | undefined): string[] | undefined => v?.split(/[\s;|]+/).filter(Boolean);
    return defined({
      ...row,
      thresholds: list(row.thresholds)?.map(Number),
      venues: list(row.venues),
      gates: list(row.gates),
      reentry: flag(row.reentry),
      webShop: flag(row.webShop),
      topup: flag(row.topup),
      topupAmounts: list(row.topupAmounts)?.map(Number),
      into: list(row.into),
    });
  });
}

export function readPlansFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'plans');
  const plans = new Map<string, { name: string; rates: Record<string, string | undefined>[] }>();
  for (const r of rows!) {
    const { plan, ...rate } = blankToUndefined(r);
    if (!plan) throw new Error(`rates file ${file}: a row without a plan`);
    let p = plans.get(plan);
    if (!p) plans.set(plan, (p = { name: plan, rates: [] }));
    p.rates.push({ ...rate, prefix: rate.prefix ?? '' });
  }
  return [...plans.values()];
}

export function readItemsFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'items');
  return rows!.map(blankToUndefined);
}

/** access.csv: area,name,countryCode,number,label,notes (one row per number; area fields from its first row). */
export function readAccessFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'areas');
  const areas = new Map<string, Record<string, unknown> & { numbers: Record<string, unknown>[] }>();
  for (const r of rows!) {
    const { area, name, countryCode, number, label, notes } = blankToUndefined(r);
    if (!area) throw new Error(`access file ${file}: a row without an area`);
    let a = areas.get(area);
    if (!a) areas.set(area, (a = { ...defined({ area, name, countryCode, notes }), numbers: [] }));
    a.numbers.push(defined({ number, label }));
  }
  return [...areas.values()];
}
