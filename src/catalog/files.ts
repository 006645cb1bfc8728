/**
 * Catalog files as operators write them: JSON (an array, or an object holding
 * one) or CSV with a header row. Values are validated by the catalog store.
 *
 * products.csv: name,kind,currency,face,price,plan,thresholds,expiryDays,maxCalls,maxAnis,aniChangesPerDay,title,webShop
 *               (thresholds separated by spaces or semicolons, e.g. "300;60;10"; webShop 1/true/yes
 *               puts the product on public sale)
 * rates.csv:    plan,prefix,rate,fee, and optionally per (the seconds `rate` pays), initial,next,
 *               minSec,minCost,disconnect (billing terms), rate.<period> (the rate in a named period),
 *               and the plan's own tz, activeFrom and periods (`peak=mon-fri 08:00-20:00|weekend=sat-sun`),
 *               on any of its rows. Instead of rate and per, a price list's price per minute in units
 *               of the currency: perMinute (and perMinute.<period>), e.g. 0.10 (rate 100000, per 60).
 *               Rows are grouped into one plan version per (plan, activeFrom).
 * items.csv:    venue,item,price,title
 * Entry products in CSV list venues and gates separated like thresholds; talk products their
 * topupAmounts, recharge products their `into`, the same way (topup: 1/true/yes, else false).
 */
import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';
import { visit } from 'jsonc-parser';
import type { TSchema } from '@sinclair/typebox';
import { CatalogRefusal } from './refusal';
import { Item, MAX_RATE, PRODUCT_SCHEMAS, Rate, RatePlan, WEEKDAYS, type Weekday } from './schema';

type Row = Record<string, string>;

function readRows(file: string): { json?: unknown; rows?: Row[] } {
  let text: string;
  try {
    // A byte order mark (as some editors save UTF-8) is no part of the text.
    text = readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  } catch (err) {
    throw new CatalogRefusal('file_unreadable', (err as Error).message, { cause: err });
  }
  if (/\.json$/i.test(file) || /^\s*[[{]/.test(text)) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new CatalogRefusal('bad_catalog_file', `${file} is not valid JSON: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const twice = nameGivenTwice(text);
    if (twice)
      throw new CatalogRefusal(
        'duplicate_entry',
        `${file} line ${twice.line}: "${twice.name}" is given twice in one object`,
      );
    return { json };
  }
  try {
    return { rows: parse<Row>(text, { columns: headerOf, skip_empty_lines: true, trim: true, comment: '#' }) };
  } catch (err) {
    if (err instanceof CatalogRefusal) throw err;
    throw new CatalogRefusal('bad_catalog_file', (err as Error).message, { cause: err });
  }
}

/**
 * The first name given twice in one JSON object: JSON.parse keeps the last one
 * silently, so a price or a rate written twice would load the one the operator
 * may not have meant.
 */
function nameGivenTwice(text: string): { name: string; line: number } | undefined {
  const objects: Set<string>[] = [];
  let found: { name: string; line: number } | undefined;
  visit(text, {
    onObjectBegin: () => void objects.push(new Set()),
    onObjectEnd: () => void objects.pop(),
    onObjectProperty: (name, _offset, _length, line) => {
      const names = objects[objects.length - 1]!;
      if (names.has(name)) found ??= { name, line: line + 1 };
      names.add(name);
    },
  });
  return found;
}

/** The header row's names: a name given twice would have its first column silently dropped. */
function headerOf(names: string[]): string[] {
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined)
    throw new CatalogRefusal('duplicate_entry', `the header row names the column "${twice}" twice`);
  return names;
}

const arrayIn = (json: unknown, field: string): unknown[] => {
  if (Array.isArray(json)) return json;
  const inner = (json as Record<string, unknown> | null)?.[field];
  if (Array.isArray(inner)) return inner;
  throw new CatalogRefusal('bad_catalog_file', `expected an array or {"${field}": [...]}`);
};

/**
 * CSV cells are text: those of a column the schema holds integers in become
 * numbers when they are plain decimal digits, and stay text otherwise (so
 * that `0x10`, `1e3` or `ten` are refused as no integer, not read as one).
 */
const DECIMAL = /^-?[0-9]{1,16}$/;
const num = (v: string): number | string => (DECIMAL.test(v) ? Number(v) : v);

const isNumeric = (p: TSchema): boolean =>
  p.type === 'integer' || p.type === 'number' || ((p.anyOf as TSchema[] | undefined) ?? []).some(isNumeric);

function numericColumns(...schemas: TSchema[]): Set<string> {
  const cols = new Set<string>();
  for (const schema of schemas)
    for (const [name, p] of Object.entries((schema.properties ?? {}) as Record<string, TSchema>))
      if (isNumeric(p)) cols.add(name);
  return cols;
}

const PRODUCT_NUMBERS = numericColumns(...Object.values(PRODUCT_SCHEMAS));
const RATE_NUMBERS = numericColumns(Rate);
const PLAN_NUMBERS = numericColumns(RatePlan);
const ITEM_NUMBERS = numericColumns(Item);

function typed(row: Record<string, string | undefined>, numeric: Set<string>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v !== undefined && numeric.has(k) ? num(v) : v]));
}

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
      ...typed(row, PRODUCT_NUMBERS),
      thresholds: list(row.thresholds)?.map(num),
      venues: list(row.venues),
      gates: list(row.gates),
      reentry: flag(row.reentry),
      webShop: flag(row.webShop),
      topup: flag(row.topup),
      topupAmounts: list(row.topupAmounts)?.map(num),
      into: list(row.into),
    });
  });
}

/** Columns that describe a plan version rather than one of its prefixes. */
const PLAN_COLUMNS = ['tz', 'activeFrom', 'periods'] as const;

/** A price in units of a currency with at most six decimals (micro-units), as price lists print it. */
const UNIT_PRICE = /^([0-9]{1,10})(?:\.([0-9]{1,6}))?$/;

/**
 * A price-list row's price per minute (`perMinute`, `perMinute.<period>`: units of the currency,
 * e.g. 0.10) as the rate plan holds it: micro-units per 60 seconds, exact. `where` names the plan
 * and prefix in a refusal.
 */
function perMinuteRate(col: string, cell: string, where: string): number {
  const m = UNIT_PRICE.exec(cell);
  if (!m) {
    const why = /^[0-9]+,[0-9]+$/.test(cell)
      ? 'write the decimal point as "."'
      : /^[0-9]*\.[0-9]{7,}$/.test(cell)
        ? 'a price has at most 6 decimals (micro-units); round it as the price list means it'
        : 'write a price in units of the currency, e.g. 0.10';
    throw new CatalogRefusal('bad_catalog_entry', `${where}: ${col} '${cell}' is no price per minute: ${why}`);
  }
  const micro = Number(m[1]) * 1_000_000 + Number((m[2] ?? '').padEnd(6, '0'));
  // Said here in the price list's own terms: the plan's checks would name `rate` and no row.
  if (micro < 60)
    throw new CatalogRefusal(
      'bad_catalog_entry',
      `${where}: ${col} '${cell}' is below the least price per minute, 0.00006 (a micro-unit a second): a destination cannot be free`,
    );
  if (micro > MAX_RATE)
    throw new CatalogRefusal(
      'bad_catalog_entry',
      `${where}: ${col} '${cell}' is above the most a minute may cost, ${MAX_RATE / 1_000_000}`,
    );
  return micro;
}

/**
 * The compact periods of a CSV cell: `name=days [HH:MM-HH:MM]` separated by `|`,
 * days as `mon-fri`, `sat+sun` or `fri-mon` (wrapping). The schema checks the rest.
 */
export function parsePeriods(cell: string): { name: string; days: string[]; from?: string; to?: string }[] {
  return cell
    .split('|')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((spec) => {
      const m = /^([^=\s]+)\s*=\s*([a-z+,-]+)(?:\s+(\d\d:\d\d)-(\d\d:\d\d))?$/i.exec(spec);
      if (!m)
        throw new CatalogRefusal(
          'bad_catalog_file',
          `period '${spec}': write name=days [HH:MM-HH:MM], e.g. peak=mon-fri 08:00-20:00`,
        );
      const days = new Set<string>();
      for (const part of m[2]!.toLowerCase().split(/[+,]/)) {
        const [a, b = a] = part.split('-');
        let i = WEEKDAYS.indexOf(a as Weekday);
        const j = WEEKDAYS.indexOf(b as Weekday);
        if (i < 0 || j < 0)
          throw new CatalogRefusal('bad_catalog_file', `period '${spec}': days are sun, mon, tue, wed, thu, fri, sat`);
        for (days.add(WEEKDAYS[i]!); i !== j;) days.add(WEEKDAYS[(i = (i + 1) % 7)]!);
      }
      return defined({ name: m[1], days: [...days], from: m[3], to: m[4] }) as { name: string; days: string[] };
    });
}

/**
 * A CSV whose header lacks the column that groups its rows is said so: each row
 * was refused for having no plan (or area) when the header spelt it `Plan`.
 */
function needColumn(rows: Row[], col: string, what: string): void {
  const first = rows[0];
  if (first && !Object.hasOwn(first, col))
    throw new CatalogRefusal(
      'bad_catalog_file',
      `${what}: the header row has no column "${col}" (it has ${Object.keys(first).join(', ')}; names are case-sensitive)`,
    );
}

export function readPlansFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'plans');
  type Version = { name: string; rates: Record<string, unknown>[] } & Record<string, unknown>;
  const versions = new Map<string, Version>();
  needColumn(rows!, 'plan', `rates file ${file}`);
  rows!.forEach((r, i) => {
    const where = `rates file ${file} row ${i + 1}`;
    const { plan, ...cells } = blankToUndefined(r);
    if (!plan) throw new CatalogRefusal('bad_catalog_file', `${where}: a row without a plan`);
    const key = `${plan}@${cells.activeFrom ?? ''}`;
    let v = versions.get(key);
    if (!v) versions.set(key, (v = { name: plan, rates: [] }));
    // Built from entries, not by assignment: a `__proto__` column assigned to a plain object set its
    // prototype (or nothing) and vanished, where the schema refuses any column it does not take.
    const rateCells: [string, unknown][] = [];
    const periodCells: [string, number | string][] = [];
    const perMinute: [string, string][] = [];
    for (const [col, value] of Object.entries(cells)) {
      if (value === undefined) continue;
      if (col === 'perMinute' || col.startsWith('perMinute.')) perMinute.push([col, value]);
      else if ((PLAN_COLUMNS as readonly string[]).includes(col)) {
        const parsed = col === 'periods' ? parsePeriods(value) : PLAN_NUMBERS.has(col) ? num(value) : value;
        // A plan's own columns may be repeated on its rows, or given once; never two different values.
        if (v[col] !== undefined && JSON.stringify(v[col]) !== JSON.stringify(parsed))
          throw new CatalogRefusal('bad_catalog_entry', `${where}: plan ${plan} has two different values of ${col}`);
        v[col] = parsed;
      } else if (col.startsWith('rate.')) periodCells.push([col.slice(5), num(value)]);
      else rateCells.push([col, RATE_NUMBERS.has(col) ? num(value) : value]);
    }
    const rate: Record<string, unknown> = Object.fromEntries(rateCells);
    if (periodCells.length) rate.periodRates = Object.fromEntries(periodCells);
    if (perMinute.length) {
      const at = `rate plan ${plan}: prefix '${typeof rate.prefix === 'string' ? rate.prefix : ''}' (row ${i + 1})`;
      // One unit per row: a per-second rate.peak beside a perMinute would be read per minute.
      const other = ['rate', 'per', ...periodCells.map(([p]) => `rate.${p}`)].filter((c) => Object.hasOwn(cells, c));
      if (other.length)
        throw new CatalogRefusal(
          'bad_catalog_entry',
          `${at}: has both a price per minute and ${other.join(', ')}: give its prices one way, perMinute (and perMinute.<period>) or rate and per`,
        );
      const periods: [string, number][] = [];
      for (const [col, value] of perMinute) {
        const micro = perMinuteRate(col, value, at);
        if (col === 'perMinute') rate.rate = micro;
        else periods.push([col.slice(10), micro]);
      }
      if (rate.rate === undefined)
        throw new CatalogRefusal('bad_catalog_entry', `${at}: has perMinute.<period> prices but no perMinute`);
      rate.per = 60;
      if (periods.length) rate.periodRates = Object.fromEntries(periods);
    }
    v.rates.push({ ...rate, prefix: rate.prefix ?? '' });
  });
  return [...versions.values()];
}

export function readItemsFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'items');
  return rows!.map((r) => typed(blankToUndefined(r), ITEM_NUMBERS));
}

/** access.csv: area,name,countryCode,number,label,notes (one row per number; the area's fields on any of its rows). */
export function readAccessFile(file: string): unknown[] {
  const { json, rows } = readRows(file);
  if (json !== undefined) return arrayIn(json, 'areas');
  const areas = new Map<string, Record<string, unknown> & { numbers: Record<string, unknown>[] }>();
  needColumn(rows!, 'area', `access file ${file}`);
  rows!.forEach((r, i) => {
    const { area, number, label, ...own } = blankToUndefined(r);
    if (!area) throw new CatalogRefusal('bad_catalog_file', `access file ${file} row ${i + 1}: a row without an area`);
    let a = areas.get(area);
    if (!a) areas.set(area, (a = { area, numbers: [] }));
    // An area's own columns may be repeated on its rows, or given once; never two different values.
    for (const [col, value] of Object.entries(own)) {
      if (value === undefined) continue;
      if (a[col] !== undefined && a[col] !== value)
        throw new CatalogRefusal(
          'bad_catalog_entry',
          `access file ${file} row ${i + 1}: area ${area} has two different values of ${col}`,
        );
      a[col] = value;
    }
    a.numbers.push(defined({ number, label }));
  });
  return [...areas.values()];
}
