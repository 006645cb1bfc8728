/** Loading the catalog (products, rate plans, venue items, access numbers) and showing it. */
import { readAccessFile, readItemsFile, readPlansFile, readProductsFile } from '../../catalog/files';
import { putAccess, putItems, putPlans, putProducts, readCatalog } from '../../catalog/store';
import { topupTerms } from '../../catalog/schema';
import { CatalogRefusal } from '../../catalog/refusal';
import { parseOptions, type Cli, type Command } from '../command';

interface LoadFiles {
  products?: string;
  plans?: string;
  items?: string;
  access?: string;
}

/**
 * Reads every file, then loads items, plans, products and access areas in that order, counting
 * what it loaded into `loaded` and each warning (also said on stderr) into `warnings`.
 */
async function load(
  cli: Cli,
  files: LoadFiles,
  loaded: Record<string, number>,
  warnings: string[],
  say: (line: string) => void,
): Promise<void> {
  const warn = (w: string): void => {
    warnings.push(w);
    process.stderr.write(`warning: ${w}\n`);
  };
  // Every file is read (and parsed) before anything is written: one that cannot be read loads nothing.
  const items = files.items ? readItemsFile(files.items) : undefined;
  const plans = files.plans ? readPlansFile(files.plans) : undefined;
  const products = files.products ? readProductsFile(files.products) : undefined;
  const access = files.access ? readAccessFile(files.access) : undefined;
  const ctx = await cli.ctx();
  if (items) say(`loaded ${(loaded.items = (await putItems(ctx.redis, items)).length)} item(s)`);
  // Plans first, so no product ever points at a plan the gateways do not have yet.
  if (plans) say(`loaded ${(loaded.plans = (await putPlans(ctx.redis, plans)).length)} rate plan(s)`);
  if (products) {
    const done = await putProducts(ctx.redis, products);
    say(`loaded ${(loaded.products = done.length)} product(s)`);
    // Loaded all the same (a plan may come next), but said: until then every call on them is no_rate.
    const { plans: known } = await readCatalog(ctx.redis);
    const planNames = new Set([...known.values()].map((p) => p.name));
    for (const p of done) {
      if (p.kind === 'talk' && !planNames.has(p.plan))
        warn(`product ${p.name}: rate plan ${p.plan} is not loaded; its calls are refused no_rate until it is`);
      // Each call reserves all that is free (grantSec 0): a second line never has anything free to start on.
      if (p.kind === 'talk' && (p.maxCalls ?? 1) > 1 && p.grantSec === 0)
        warn(
          `product ${p.name}: maxCalls ${p.maxCalls} with grantSec 0: a call reserves all that is free, so while one ` +
            'is live every other start is refused insufficient_balance; give grantSec (seconds a call reserves at a time)',
        );
      // `expiring` counts down to the expiry first use starts: without one it never comes.
      if (p.expiringDays !== undefined && !('expiryDays' in p && p.expiryDays))
        warn(
          `product ${p.name}: expiringDays has no effect: its IDs have no expiryDays, so never expire` +
            `${p.kind === 'entry' ? " (a ticket's validUntil is not an expiry)" : ''}`,
        );
      // A top-up that leaves the expiry within expiringDays announces it again at the next sweep.
      const topup = topupTerms(p);
      if (p.expiringDays !== undefined && topup.allowed && topup.extendsDays > 0 && topup.extendsDays <= p.expiringDays)
        warn(
          `product ${p.name}: expiringDays ${p.expiringDays} is not below the ${topup.extendsDays} days a top-up ` +
            'extends the expiry to: every top-up sends expiring again',
        );
    }
  }
  if (access) say(`loaded ${(loaded.access = (await putAccess(ctx.redis, access)).length)} access area(s)`);
}

export const catalogCommands: Record<string, Command> = {
  'catalog-load': {
    summary: 'load products, rate plans, venue items and access numbers into Redis (gateways refresh at once)',
    usage:
      '[--products FILE.json|csv] [--plans FILE.json|csv] [--items FILE.json|csv] [--access FILE.json|csv] [--json]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        products: { type: 'string' },
        plans: { type: 'string' },
        items: { type: 'string' },
        access: { type: 'string' },
        json: { type: 'boolean', default: false },
      });
      if (!values.products && !values.plans && !values.items && !values.access) {
        throw Object.assign(new Error('give --products, --plans and/or --items, or --access'), {
          code: 'ERR_PARSE_ARGS_MISSING',
        });
      }
      const loaded: Record<string, number> = {};
      const warnings: string[] = [];
      // With --json, stdout holds its one line only: it says what the `loaded …` lines would.
      const say = (line: string): void => {
        if (!values.json) cli.out(line);
      };
      try {
        await load(cli, values, loaded, warnings, say);
      } catch (err) {
        if (!(err instanceof CatalogRefusal)) throw err;
        // A refusal as every command says one, reason first, with what exactly is wrong; with
        // --json, also on stdout with what was loaded before it (the files before it stay loaded).
        process.stderr.write(`refused: ${err.reason}: ${err.message}\n`);
        if (values.json)
          cli.out(JSON.stringify({ ok: false, reason: err.reason, message: err.message, loaded, warnings }));
        return 1;
      }
      if (values.json) cli.out(JSON.stringify({ ok: true, loaded, warnings }));
    },
  },
  'catalog-show': {
    summary: 'print the catalog as JSON (products, rate plans, venue items, access areas)',
    async run(cli) {
      const cat = await readCatalog((await cli.ctx()).redis);
      cli.out(
        JSON.stringify(
          {
            version: cat.version,
            products: [...cat.products.values()],
            plans: [...cat.plans.values()],
            items: [...cat.items.values()],
            access: [...cat.access.values()],
          },
          null,
          2,
        ),
      );
    },
  },
};
