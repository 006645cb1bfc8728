import type { Logger } from 'pino';
import type { RedisClient } from '../redis/connect';
import { keys } from '../redis/keys';
import { PrefixTable } from './rateplan';
import type { AccessArea, Item, Product, TokenInfo } from './schema';
import { readCatalog, tokenHash, type CatalogData } from './store';

/**
 * The gateway's in-memory copy of the catalog. Refreshed when the change channel
 * announces a new version, and by a version poll as a safety net for
 * announcements lost while the subscriber was reconnecting.
 */
export class CatalogCache {
  private data: CatalogData = {
    version: -1,
    products: new Map(),
    plans: new Map(),
    tokens: new Map(),
    items: new Map(),
    access: new Map(),
  };
  private tables = new Map<string, PrefixTable>();
  private poll?: NodeJS.Timeout;
  private refreshing?: Promise<void>;

  constructor(
    private readonly redis: RedisClient,
    private readonly subscriber: RedisClient,
    private readonly log: Logger,
    private readonly pollMs: number,
  ) {}

  async start(): Promise<void> {
    await this.refresh();
    this.subscriber.on('message', (channel: string) => {
      if (channel === keys.catalogChannel) void this.refresh();
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

  /** Refreshes when Redis knows a token this copy does not (yet): new tokens work at once. */
  async refreshIfTokenKnown(token: string): Promise<void> {
    if (!(await this.redis.hexists(keys.tokens, tokenHash(token)))) return;
    await this.refresh();
    // The refresh we joined may have read the catalog before the token was written.
    if (!this.token(token)) await this.refresh();
  }

  rateFor(plan: string, dest: string): { rate: number; fee: number } | undefined {
    return this.tables.get(plan)?.lookup(dest);
  }

  /** The destination's rate in every plan that has one, flat as call_start wants it. */
  rateArgs(dest: string): (string | number)[] {
    const out: (string | number)[] = [];
    for (const [name, table] of this.tables) {
      const hit = table.lookup(dest);
      if (hit) out.push(name, hit.rate, hit.fee);
    }
    return out;
  }

  async refresh(): Promise<void> {
    // Coalesce bursts of announcements into one read.
    this.refreshing ??= (async () => {
      try {
        const data = await readCatalog(this.redis);
        const tables = new Map<string, PrefixTable>();
        for (const [name, plan] of data.plans) tables.set(name, new PrefixTable(plan));
        this.data = data;
        this.tables = tables;
        this.log.info(
          { version: data.version, products: data.products.size, plans: data.plans.size, tokens: data.tokens.size },
          'catalog loaded',
        );
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
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
