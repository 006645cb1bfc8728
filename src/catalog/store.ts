/**
 * The catalog as stored in Redis: one hash per kind of record (name -> JSON),
 * a version counter, and a channel that announces each change so gateways
 * refresh their in-memory copy without a restart.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { messageOf } from '../protocol/reasons';
import { CLI_NAME } from '../protocol/admin';
import { BUY_PAGE_NAME } from '../protocol/sales';
import { catalogAjv, describeErrors, type Checked } from '../protocol/validator';
import {
  AccessArea,
  dialString,
  Item,
  PRODUCT_SCHEMAS,
  RatePlan,
  TokenInfo,
  type Kind,
  type Product,
  type Role,
} from './schema';
import { CatalogRefusal, type CatalogReason } from './refusal';
import { isTimeZone } from './tariff';

export interface CatalogData {
  version: number;
  products: Map<string, Product>;
  /** Rate plan versions by their field: the plan's name, or `name@activation` for a dated version. */
  plans: Map<string, RatePlan>;
  /** sha256(token) -> what the token may do */
  tokens: Map<string, TokenInfo>;
  /** `venue/item` -> item */
  items: Map<string, Item>;
  access: Map<string, AccessArea>;
  /**
   * Stored records that no longer pass their schema (one written before a bound was
   * tightened: a rate above today's cap), skipped: each named, with why, for the log.
   */
  skipped: { hash: string; field: string; why: string }[];
}

const productChecks = Object.fromEntries(
  Object.entries(PRODUCT_SCHEMAS).map(([kind, schema]) => [
    kind,
    catalogAjv.compile<Product>(schema) as Checked<Product>,
  ]),
) as unknown as Record<Kind, Checked<Product>>;
const checkItem = catalogAjv.compile<Item>(Item);
const checkArea = catalogAjv.compile<AccessArea>(AccessArea);

/**
 * Products are checked against the schema of their own kind (clearer errors than
 * one union), and validity instants become milliseconds.
 */
const checkProduct: Checked<Product> = Object.assign(
  (v: unknown): v is Product => {
    const kind = (v as { kind?: unknown } | null)?.kind;
    const check =
      typeof kind === 'string' && Object.hasOwn(productChecks, kind) ? productChecks[kind as Kind] : undefined;
    if (!check) {
      checkProduct.errors = [
        {
          instancePath: '/kind',
          keyword: 'enum',
          params: {},
          schemaPath: '',
          message: `must be one of ${Object.keys(PRODUCT_SCHEMAS).join(', ')}`,
        },
      ];
      return false;
    }
    if (!check(v)) {
      checkProduct.errors = check.errors;
      return false;
    }
    // One webhook per URL: which webhooks had an event is kept by URL. Compared as fetch sends them,
    // or `HTTP://Host:80/x#a` and `http://host/x` would make one receiver get every event twice.
    const ends = (v.webhooks ?? []).map((w) => endpoint(w.url));
    const badHook = ends.findIndex((e, i) => e === undefined || ends.indexOf(e) < i);
    if (badHook >= 0) {
      checkProduct.errors = [
        {
          instancePath: `/webhooks/${badHook}/url`,
          keyword: 'format',
          params: {},
          schemaPath: '',
          message: 'must be an http or https URL, without user:password (fetch sends none), and not another webhook’s',
        },
      ];
      return false;
    }
    if (v.kind === 'entry') {
      const from = toMs(v.validFrom);
      const until = toMs(v.validUntil);
      if (Number.isNaN(from) || Number.isNaN(until) || (from && until && until <= from)) {
        checkProduct.errors = [
          {
            instancePath: '/validUntil',
            keyword: 'range',
            params: {},
            schemaPath: '',
            message:
              'validFrom/validUntil must be ms since 1970 or date-times with their offset (2027-12-31T23:59:59Z), validUntil after validFrom',
          },
        ];
        return false;
      }
      if (from) v.validFrom = from;
      if (until) v.validUntil = until;
    }
    return true;
  },
  { errors: null as Checked<Product>['errors'] },
);

/**
 * The endpoint an http(s) webhook URL POSTs to (scheme and host in lower case, no default port, no
 * fragment: fetch never sends one), or undefined when it is not one fetch could deliver to.
 */
function endpoint(s: string): string | undefined {
  try {
    const u = new URL(s);
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.hostname === '' || u.username || u.password)
      return undefined;
    u.hash = '';
    return u.href;
  } catch {
    return undefined;
  }
}

/**
 * A date-time with its offset, to the minute or finer: what the loading
 * machine's time zone cannot change. A date alone (its start? its end? where?)
 * or a time without an offset (local to whom?) is no moment.
 */
const MOMENT = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?(?:Z|[+-](\d\d):(\d\d))$/;

/** ms since 1970 of a moment (MOMENT); NaN for any other string. */
function momentMs(v: string): number {
  const m = MOMENT.exec(v);
  if (!m) return NaN;
  const [y = 0, mo = 0, d = 0, hh = 0, mm = 0, ss = 0, oh = 0, om = 0] = m.slice(1).map((x) => Number(x ?? 0));
  // Date.parse rolls 2027-02-29 over to 1 March and 24:00 to the next day: each field must be its own.
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d) return NaN;
  if (hh > 23 || mm > 59 || ss > 59 || oh > 23 || om > 59) return NaN;
  return Date.parse(v);
}

/** ms since 1970 of a validFrom/validUntil; NaN for a string that is no moment. */
function toMs(v: number | string | undefined): number {
  if (v === undefined) return 0;
  return typeof v === 'number' ? v : momentMs(v);
}
const checkPlan = catalogAjv.compile<RatePlan>(RatePlan);
const checkToken = catalogAjv.compile<TokenInfo>(TokenInfo);

function parseAll<T>(
  hash: Record<string, string>,
  check: Checked<T>,
  key: string,
  skipped: CatalogData['skipped'],
): Map<string, T> {
  const out = new Map<string, T>();
  for (const [name, json] of Object.entries(hash)) {
    const v: unknown = JSON.parse(json);
    // A record that no longer parses is skipped rather than taking the gateway down, and said:
    // a plan skipped silently refused every call it rated (no_rate) with nothing to say why.
    if (check(v)) out.set(name, v);
    else skipped.push({ hash: key, field: name, why: describeErrors(check.errors) });
  }
  return out;
}

export async function readCatalog(redis: RedisClient): Promise<CatalogData> {
  const [ver, products, plans, tokens, items, access] = await Promise.all([
    redis.get(keys.catalogVersion),
    redis.hgetall(keys.products),
    redis.hgetall(keys.plans),
    redis.hgetall(keys.tokens),
    redis.hgetall(keys.items),
    redis.hgetall(keys.access),
  ]);
  const skipped: CatalogData['skipped'] = [];
  return {
    version: Number(ver ?? 0),
    products: parseAll(products, checkProduct, keys.products, skipped),
    plans: parseAll(plans, checkPlan, keys.plans, skipped),
    tokens: parseAll(tokens, checkToken, keys.tokens, skipped),
    items: parseAll(items, checkItem, keys.items, skipped),
    access: parseAll(access, checkArea, keys.access, skipped),
    skipped,
  };
}

async function bump(redis: RedisClient): Promise<number> {
  const v = await redis.incr(keys.catalogVersion);
  await redis.publish(keys.catalogChannel, String(v));
  return v;
}

function validated<T>(items: unknown[], check: Checked<T>, what: string): T[] {
  return items.map((item, i) => {
    if (!check(item))
      throw new CatalogRefusal('bad_catalog_entry', `${what} #${i + 1}: ${describeErrors(check.errors)}`);
    return item;
  });
}

/**
 * Refuses a batch that names one record twice: the second would silently
 * replace the first, and the count loaded would be wrong.
 */
function once<T>(records: T[], what: string, keyOf: (r: T) => string): void {
  const first = new Map<string, number>();
  records.forEach((r, i) => {
    const key = keyOf(r);
    const j = first.get(key);
    if (j !== undefined)
      throw new CatalogRefusal('duplicate_entry', `${what} #${i + 1}: ${key} is given twice (also ${what} #${j + 1})`);
    first.set(key, i);
  });
}

export async function putProducts(redis: RedisClient, items: unknown[]): Promise<Product[]> {
  const products = validated(items, checkProduct, 'product');
  once(products, 'product', (p) => `the product ${p.name}`);
  products.forEach((p, i) => {
    if (p.kind === 'talk' && p.finalAction === 'redirect' && !p.redirectTo)
      throw new CatalogRefusal(
        'bad_catalog_entry',
        `product #${i + 1}: finalAction redirect needs redirectTo (the number to send the caller to)`,
      );
    // A balance cap below the value sold would refuse every top-up of every ID of the product.
    if (p.kind === 'talk' && p.topupMaxBalance !== undefined && p.topupMaxBalance < p.face)
      throw new CatalogRefusal(
        'bad_catalog_entry',
        `product #${i + 1}: topupMaxBalance ${p.topupMaxBalance} is below face ${p.face}`,
      );
  });
  if (products.length) await redis.hset(keys.products, ...products.flatMap((p) => [p.name, JSON.stringify(p)]));
  await bump(redis);
  return products;
}

/** At most this many versions of one plan to come (activation after the load), beside the one in force. */
export const MAX_PLAN_VERSIONS = 16;

/** The hash field of a plan version: its name, or `name@activation ms` for a dated version. */
const planField = (p: RatePlan): string => (p.activeFrom ? `${p.name}@${p.activeFrom}` : p.name);
const fieldActivation = (field: string): number => Number(field.split('@')[1] ?? 0);

/**
 * What the schema cannot say: a known time zone, periods that end after they
 * start, period rates only for declared periods, each prefix once and never
 * starting with 0, a minimum duration at a block end. Makes
 * `activeFrom` milliseconds (an undated plan has none).
 */
function checkPlanRules(p: RatePlan): void {
  const fail = (msg: string, reason: CatalogReason = 'bad_catalog_entry'): never => {
    throw new CatalogRefusal(reason, `rate plan ${p.name}: ${msg}`);
  };
  if (p.tz !== undefined && !isTimeZone(p.tz)) fail(`unknown time zone '${p.tz}'`);
  if (p.activeFrom !== undefined) {
    const v = p.activeFrom;
    const ms = typeof v === 'number' ? v : /^\d+$/.test(v) ? Number(v) : momentMs(v);
    if (!Number.isSafeInteger(ms) || ms < 0)
      fail(`activeFrom '${v}' is not ms since 1970 or a date-time with its offset (2027-01-01T00:00:00+01:00)`);
    if (ms) p.activeFrom = ms;
    else delete p.activeFrom;
  }
  const periods = new Set<string>();
  for (const w of p.periods ?? []) {
    if ((w.from ?? '00:00') >= (w.to ?? '24:00')) fail(`period ${w.name} must end after it starts`);
    periods.add(w.name);
  }
  const seen = new Set<string>();
  for (const r of p.rates) {
    if (seen.has(r.prefix)) fail(`prefix '${r.prefix}' appears twice`, 'duplicate_entry');
    seen.add(r.prefix);
    // Destinations are rated after their + or 00 is taken off and never start with 0: such a
    // prefix would never match, and its calls would go to a shorter prefix or the catch-all.
    if (r.prefix.startsWith('0'))
      fail(`prefix '${r.prefix}' starts with 0: write prefixes country code first, without 00 or a trunk 0`);
    // A charged duration between two block ends cannot be granted: the seconds past the
    // last block end inside it start the next block, which the grant did not reserve.
    const ini = r.initial ?? 1;
    const nxt = r.next ?? 1;
    if (r.minSec !== undefined && r.minSec > ini && (r.minSec - ini) % nxt !== 0)
      fail(
        `prefix '${r.prefix}': minSec ${r.minSec} is not the end of a block (initial ${ini} + a whole number of next blocks of ${nxt})`,
      );
    for (const name of Object.keys(r.periodRates ?? {}))
      if (!periods.has(name))
        fail(`prefix '${r.prefix}' has a rate for period '${name}', which the plan does not define`);
    // At least a micro-unit a second, as a per-second rate is: a call no dearer than that could
    // last longer than any duration the scripts count exactly, and cost nothing for seconds.
    const per = r.per ?? 1;
    for (const [name, rate] of [['rate', r.rate] as const, ...Object.entries(r.periodRates ?? {})])
      if (rate < per)
        fail(
          `prefix '${r.prefix}': ${name === 'rate' ? 'rate' : `rate.${name}`} ${rate} per ${per} s is less than a micro-unit a second`,
        );
  }
}

/**
 * A plan the schema refuses, named by its name and the prefix at fault, as the rules
 * below name them: `rate plan #2: rates.3.rate` sent an operator counting the rows of a
 * CSV price list's second plan, from 0. A name or prefix that is itself at fault (or no
 * string) is not quoted: its place names it.
 */
function validPlans(items: unknown[]): RatePlan[] {
  return items.map((item, i) => {
    if (checkPlan(item)) return item;
    const errors = checkPlan.errors ?? [];
    const about = (path: string, field: string): boolean =>
      errors.some(
        (e) =>
          e.instancePath.startsWith(`${path}/${field}`) ||
          (e.instancePath === path && (e.params as { missingProperty?: string }).missingProperty === field),
      );
    const plan = item as { name?: unknown; rates?: unknown } | null;
    const name = typeof plan?.name === 'string' && !about('', 'name') ? plan.name : `#${i + 1}`;
    const rates: unknown[] = Array.isArray(plan?.rates) ? plan.rates : [];
    const said = describeErrors(errors).replace(/(^|; )rates\.(\d+)(?:\.| )/g, (all, sep: string, n: string) => {
      const prefix = (rates[Number(n)] as { prefix?: unknown } | null | undefined)?.prefix;
      return typeof prefix === 'string' && !about(`/rates/${n}`, 'prefix') ? `${sep}prefix '${prefix}': ` : all;
    });
    throw new CatalogRefusal('bad_catalog_entry', `rate plan ${name}: ${said}`);
  });
}

/**
 * Loads rate plans. An undated plan replaces every stored version of its name
 * (the file is the whole plan, as before dated versions existed); a dated one
 * (`activeFrom`) is added beside them, replacing only a version of the same
 * activation. Versions that a later one has already superseded at `now` are
 * removed. Written in one transaction, so a gateway never reads half a plan.
 */
export async function putPlans(redis: RedisClient, items: unknown[], now = Date.now()): Promise<RatePlan[]> {
  const plans = validPlans(items);
  plans.forEach(checkPlanRules);
  const stored = await redis.hkeys(keys.plans);
  const del: string[] = [];
  const set: string[] = [];
  for (const name of new Set(plans.map((p) => p.name))) {
    const mine = plans.filter((p) => p.name === name);
    const fields = new Set(mine.map(planField));
    if (fields.size < mine.length)
      throw new CatalogRefusal('duplicate_entry', `rate plan ${name}: two versions with the same activeFrom`);
    const old = stored.filter((f) => f === name || f.startsWith(`${name}@`));
    const replaceAll = mine.some((p) => p.activeFrom === undefined);
    const all = new Set([...(replaceAll ? [] : old), ...fields]);
    // The version in force now, and everything after it, stays; what it superseded goes.
    const inForce = Math.max(-1, ...[...all].map(fieldActivation).filter((t) => t <= now));
    const keep = [...all].filter((f) => fieldActivation(f) >= inForce);
    // The one in force is not "to come": docs/operations.md promises 16 versions beside it.
    if (keep.filter((f) => fieldActivation(f) > now).length > MAX_PLAN_VERSIONS)
      throw new CatalogRefusal(
        'too_many_versions',
        `rate plan ${name}: more than ${MAX_PLAN_VERSIONS} versions to come`,
      );
    del.push(...old.filter((f) => !keep.includes(f)));
    for (const p of mine) if (keep.includes(planField(p))) set.push(planField(p), JSON.stringify(p));
  }
  const tx = redis.multi();
  if (del.length) tx.hdel(keys.plans, ...del);
  if (set.length) tx.hset(keys.plans, ...set);
  await tx.exec();
  await bump(redis);
  return plans;
}

export async function putItems(redis: RedisClient, rows: unknown[]): Promise<Item[]> {
  const items = validated(rows, checkItem, 'item');
  once(items, 'item', (i) => `the item ${i.item} of venue ${i.venue}`);
  if (items.length) await redis.hset(keys.items, ...items.flatMap((i) => [`${i.venue}/${i.item}`, JSON.stringify(i)]));
  await bump(redis);
  return items;
}

export async function putAccess(redis: RedisClient, rows: unknown[]): Promise<AccessArea[]> {
  const areas = validated(rows, checkArea, 'access area');
  once(areas, 'access area', (a) => `the area ${a.area}`);
  // A number listed twice would show twice on the area's page, however it is spaced.
  for (const a of areas) once(a.numbers, `access area ${a.area}: number`, (n) => `the number ${dialString(n.number)}`);
  if (areas.length) await redis.hset(keys.access, ...areas.flatMap((a) => [a.area, JSON.stringify(a)]));
  await bump(redis);
  return areas;
}

export const tokenHash = (token: string): string => createHash('sha256').update(token).digest('hex');

/**
 * A token's public id: the start of its hash, enough to tell the tokens of one name apart (a
 * rotation has two for a while) and to revoke one of them, and nothing that leads to the secret.
 */
export const tokenId = (hash: string): string => hash.slice(0, 12);

/**
 * The name a role's tokens may not take: the gateway keys requests of its own
 * under it, as it keys a token's `<name>/<Idempotency-Key>`. A sales token
 * `web` would share the buy page's purchases, an admin token `cli` the
 * command line's top-ups.
 */
export const RESERVED_NAMES: Partial<Record<Role, string>> = { sales: BUY_PAGE_NAME, admin: CLI_NAME };

/** What makes a token's grant (new or changed) one the gateways cannot serve, or undefined when nothing does. */
export function tokenProblem(info: TokenInfo): string | undefined {
  if (!checkToken(info)) return `token: ${describeErrors(checkToken.errors)}`;
  // A scanner redeems for its venue only, so it must have one.
  if (info.role === 'scanner' && !info.venue) return 'token: a scanner token needs --venue';
  // Only a scanner redeems somewhere: a venue or gate on another role would be kept and mean nothing.
  if (info.role !== 'scanner' && (info.venue || info.gate))
    return `token: ${info.role === 'admin' ? 'an' : 'a'} ${info.role} token has no venue or gate (only a scanner's does)`;
  if (RESERVED_NAMES[info.role] === info.name)
    return `token: reserved_name: ${messageOf('reserved_name')}; choose another name`;
  return undefined;
}

/** Throws unless a token (new or changed) is one the gateways can serve. */
function assertUsable(info: TokenInfo): void {
  const problem = tokenProblem(info);
  if (problem) throw new Error(problem);
}

/**
 * A token of another role has the name (the CLI's `refused: name_taken`), or a scanner token of
 * another venue (`refused: name_elsewhere`).
 */
export class TokenNameTaken extends Error {
  readonly reason: 'name_taken' | 'name_elsewhere';
  constructor(
    readonly tokenName: string,
    readonly role: Role,
    venue?: string,
  ) {
    super(
      venue === undefined
        ? `${tokenName} is the name of a ${role} token`
        : `${tokenName} is the name of a ${role} token of venue ${venue}`,
    );
    this.reason = venue === undefined ? 'name_taken' : 'name_elsewhere';
  }
}

/**
 * Creates a token; one more of a name (a rotation) only in that name's role and venue. Call
 * records, redemption records, logs and metering key a client by its token's
 * name alone, so a switch and an admin token of one name could not be told
 * apart there (TokenNameTaken). Checked, then written: token creation is the
 * operator's, one command at a time.
 */
export async function createToken(
  redis: RedisClient,
  spec: { name: string; role: Role; venue?: string; gate?: string },
): Promise<{ token: string; id: string; info: TokenInfo }> {
  const info: TokenInfo = { ...spec, created: Date.now() };
  assertUsable(info);
  for (const json of await redis.hvals(keys.tokens)) {
    const t = JSON.parse(json) as TokenInfo;
    if (t.name !== spec.name) continue;
    if (t.role !== spec.role) throw new TokenNameTaken(t.name, t.role);
    // Scan ids and guesses are the name's, not the venue's: a name at two venues would let one
    // venue's till retry (a grant) and reverse the other venue's sales.
    if ((t.venue ?? '') !== (spec.venue ?? '')) throw new TokenNameTaken(t.name, t.role, t.venue ?? '(none)');
  }
  const token = `tsk_${randomBytes(32).toString('base64url')}`;
  const hash = tokenHash(token);
  await redis.hset(keys.tokens, hash, JSON.stringify(info));
  await bump(redis);
  return { token, id: tokenId(hash), info };
}

/**
 * Changes what every token with this name may do (role, venue, gate; `gate: ''`
 * unbinds it from its gate) and returns how many. Gateways close the open
 * connections of a changed token: the client reconnects under its new grant.
 */
export async function updateTokens(
  redis: RedisClient,
  name: string,
  change: { role?: Role; venue?: string; gate?: string },
): Promise<number> {
  const all = await redis.hgetall(keys.tokens);
  const updated: string[] = [];
  for (const [h, json] of Object.entries(all)) {
    const was = JSON.parse(json) as TokenInfo;
    if (was.name !== name) continue;
    const info: TokenInfo = { ...was, ...change };
    // '' clears: a scanner token turned into another role's has no venue nor gate left.
    if (info.venue === '') delete info.venue;
    if (info.gate === '') delete info.gate;
    assertUsable(info);
    updated.push(h, JSON.stringify(info));
  }
  if (updated.length) await redis.hset(keys.tokens, ...updated);
  await bump(redis);
  return updated.length / 2;
}

/**
 * Revokes every token with this name, or only the one whose id (tokenId) is given: a rotation
 * revokes the old secret and keeps the name, so the calls, scans and purchases made under it go
 * on under the new one. Returns how many.
 */
export async function revokeTokens(redis: RedisClient, name: string, id?: string): Promise<number> {
  const all = await redis.hgetall(keys.tokens);
  const gone = Object.entries(all)
    .filter(([h, json]) => (JSON.parse(json) as TokenInfo).name === name && (id === undefined || tokenId(h) === id))
    .map(([h]) => h);
  if (gone.length) await redis.hdel(keys.tokens, ...gone);
  await bump(redis);
  return gone.length;
}
