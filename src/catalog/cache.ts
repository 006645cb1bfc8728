import type { Logger } from 'pino';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import type { AccessArea, Item, Product, RatePlan, TokenInfo } from './schema';
import { readCatalog, tokenHash, type CatalogData } from './store';
import { PlanTariff } from './tariff';

/** A token whose grant a refresh took away (`revoked`) or altered: role, venue or gate (`changed`). */
export interface TokenChange {
  /** sha256 of the token, as the catalog keys it. */
  hash: string;
  change: 'revoked' | 'changed';
}

/** Whether two grants of one token let it do the same things. */
export const sameGrant = (a: TokenInfo, b: TokenInfo): boolean =>
  a.name === b.name && a.role === b.role && a.venue === b.venue && a.gate === b.gate;

/**
 * The gateway's in-memory copy of the catalog. Refreshed when the change channel
 * announces a new version, and by a version poll as a safety net for
 * announcements lost while the subscriber was reconnecting. Each refresh tells
 * the token listeners which tokens it revoked or changed, so open connections
 * of those tokens can be closed.
 */
export class CatalogCache {
  private data: CatalogData = {
    version: -1,
    products: new Map(),
    plans: new Map(),
    tokens: new Map(),
    items: new Map(),
    access: new Map(),
    skipped: [],
  };
  private tables = new Map<string, PlanTariff>();
  private poll?: NodeJS.Timeout;
  private refreshing?: Promise<void>;
  /** A refresh asked for while one was reading: it runs after, so no announcement is lost to a stale read. */
  private queued?: Promise<void>;
  private readonly tokenListeners: ((changes: TokenChange[]) => void)[] = [];

  constructor(
    private readonly redis: RedisClient,
    private readonly subscriber: RedisClient,
    private readonly log: Logger,
    private readonly pollMs: number,
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.subscriber.on('message', (channel: string) => {
      if (channel === keys.catalogChannel)
        this.refresh().catch((err: unknown) => this.log.warn({ err }, 'catalog refresh failed'));
    });
    await this.subscriber.subscribe(keys.catalogChannel);
    this.poll = setInterval(() => void this.checkVersion(), this.pollMs);
    this.poll.unref();
  }

  stop(): void {
    if (this.poll) clearInterval(this.poll);
  }

  get version(): number {
    return this.data.version;
  }

  product(name: string): Product | undefined {
    return this.data.products.get(name);
  }

  get products(): Product[] {
    return [...this.data.products.values()];
  }

  get areas(): AccessArea[] {
    return [...this.data.access.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  area(area: string): AccessArea | undefined {
    return this.data.access.get(area);
  }

  item(venue: string, item: string): Item | undefined {
    return this.data.items.get(`${venue}/${item}`);
  }

  token(token: string): TokenInfo | undefined {
    // Looked up by its SHA-256, so no comparison ever runs over the secret itself.
    return this.data.tokens.get(tokenHash(token));
  }

  /** The grant of a token by its hash (what a connection keeps instead of the secret). */
  tokenByHash(hash: string): TokenInfo | undefined {
    return this.data.tokens.get(hash);
  }

  /** Called after every refresh that revoked or changed tokens. */
  onTokenChange(listener: (changes: TokenChange[]) => void): void {
    this.tokenListeners.push(listener);
  }

  /** Refreshes when Redis knows a token this copy does not (yet): new tokens work at once. */
  async refreshIfTokenKnown(token: string): Promise<void> {
    if (!(await this.redis.hexists(keys.tokens, tokenHash(token)))) return;
    await this.refresh();
    // The refresh we joined may have read the catalog before the token was written.
    if (!this.token(token)) await this.refresh();
  }

  /** The destination's rate in force at `now` in the plan (micro-units per `per` seconds, 1 if absent), and its fee. */
  rateFor(plan: string, dest: string, now = Date.now()): { rate: number; per?: number; fee: number } | undefined {
    return this.tables.get(plan)?.rateAt(dest, now);
  }

  /** The tariff descriptor of a call to `dest` starting at `now` in one plan; undefined when it has no rate then. */
  tariffFor(plan: string, dest: string, now: number): string | undefined {
    return this.tables.get(plan)?.descriptor(dest, now);
  }

  /**
   * (plan name, tariff descriptor) pairs for a call to `dest` starting at `now`,
   * for every plan that rates the destination then (see tariff.ts). `orFrom`: for
   * a plan that rated nothing then (its versions of that time replaced and gone),
   * the descriptor from that later time instead.
   */
  tariffArgs(dest: string, now: number, orFrom?: number): string[] {
    const out: string[] = [];
    for (const [name, table] of this.tables) {
      const d = table.descriptor(dest, now) ?? (orFrom === undefined ? undefined : table.descriptor(dest, orFrom));
      if (d !== undefined) out.push(name, d);
    }
    return out;
  }

  refresh(): Promise<void> {
    // Bursts of announcements coalesce into one read, plus one more after it: a read
    // that started before the last change was written must not be the last word.
    if (!this.refreshing) {
      this.refreshing = this.load().finally(() => (this.refreshing = undefined));
      return this.refreshing;
    }
    this.queued ??= this.refreshing
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.refresh();
      });
    return this.queued;
  }

  private async load(): Promise<void> {
    const data = await readCatalog(this.redis);
    // A plan's versions are stored one per field (name, name@activation): grouped again by name.
    const versions = new Map<string, RatePlan[]>();
    for (const plan of data.plans.values()) versions.set(plan.name, [...(versions.get(plan.name) ?? []), plan]);
    const tables = new Map<string, PlanTariff>();
    for (const [name, plans] of versions) tables.set(name, new PlanTariff(plans));
    const before = this.data.tokens;
    this.data = data;
    this.tables = tables;
    this.log.info(
      { version: data.version, products: data.products.size, plans: data.plans.size, tokens: data.tokens.size },
      'catalog loaded',
    );
    for (const s of data.skipped)
      this.log.warn(s, 'catalog record skipped: it does not pass its schema (stored by an older version?)');
    const changes: TokenChange[] = [];
    for (const [hash, was] of before) {
      const now = data.tokens.get(hash);
      if (!now) changes.push({ hash, change: 'revoked' });
      else if (!sameGrant(was, now)) changes.push({ hash, change: 'changed' });
    }
    if (!changes.length) return;
    for (const listener of this.tokenListeners) {
      try {
        listener(changes);
      } catch (err) {
        this.log.warn({ err }, 'token change listener failed');
      }
    }
  }

  private async checkVersion(): Promise<void> {
    try {
      const v = Number((await this.redis.get(keys.catalogVersion)) ?? 0);
      if (v !== this.data.version) await this.refresh();
    } catch (err) {
      this.log.warn({ err }, 'catalog version check failed');
    }
  }
}
