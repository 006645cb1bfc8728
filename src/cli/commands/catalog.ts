/** Loading the catalog (products, rate plans, venue items, access numbers) and showing it. */
import { readAccessFile, readItemsFile, readPlansFile, readProductsFile } from '../../catalog/files';
import { putAccess, putItems, putPlans, putProducts, readCatalog } from '../../catalog/store';
import { topupTerms } from '../../catalog/schema';
import { parseOptions, type Command } from '../command';

export const catalogCommands: Record<string, Command> = {
  'catalog-load': {
    summary: 'load products, rate plans, venue items and access numbers into Redis (gateways refresh at once)',
    usage: '[--products FILE.json|csv] [--plans FILE.json|csv] [--items FILE.json|csv] [--access FILE.json|csv]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        products: { type: 'string' },
        plans: { type: 'string' },
        items: { type: 'string' },
        access: { type: 'string' },
      });
      if (!values.products && !values.plans && !values.items && !values.access) {
        throw Object.assign(new Error('give --products, --plans and/or --items, or --access'), {
          code: 'ERR_PARSE_ARGS_MISSING',
        });
      }
      // Every file is read (and parsed) before anything is written: one that cannot be read loads nothing.
      const items = values.items ? readItemsFile(values.items) : undefined;
      const plans = values.plans ? readPlansFile(values.plans) : undefined;
      const products = values.products ? readProductsFile(values.products) : undefined;
      const access = values.access ? readAccessFile(values.access) : undefined;
      const ctx = await cli.ctx();
      if (items) cli.out(`loaded ${(await putItems(ctx.redis, items)).length} item(s)`);
      // Plans first, so no product ever points at a plan the gateways do not have yet.
      if (plans) cli.out(`loaded ${(await putPlans(ctx.redis, plans)).length} rate plan(s)`);
      if (products) {
        const loaded = await putProducts(ctx.redis, products);
        cli.out(`loaded ${loaded.length} product(s)`);
        // Loaded all the same (a plan may come next), but said: until then every call on them is no_rate.
        const { plans: known } = await readCatalog(ctx.redis);
        const planNames = new Set([...known.values()].map((p) => p.name));
        for (const p of loaded) {
          if (p.kind === 'talk' && !planNames.has(p.plan))
            process.stderr.write(
              `warning: product ${p.name}: rate plan ${p.plan} is not loaded; its calls are refused no_rate until it is\n`,
            );
          // `expiring` counts down to the expiry first use starts: without one it never comes.
          if (p.expiringDays !== undefined && !('expiryDays' in p && p.expiryDays))
            process.stderr.write(
              `warning: product ${p.name}: expiringDays has no effect: its IDs have no expiryDays, so never expire` +
                `${p.kind === 'entry' ? " (a ticket's validUntil is not an expiry)" : ''}\n`,
            );
          // A top-up that leaves the expiry within expiringDays announces it again at the next sweep.
          const topup = topupTerms(p);
          if (
            p.expiringDays !== undefined &&
            topup.allowed &&
            topup.extendsDays > 0 &&
            topup.extendsDays <= p.expiringDays
          )
            process.stderr.write(
              `warning: product ${p.name}: expiringDays ${p.expiringDays} is not below the ${topup.extendsDays} days a top-up ` +
                'extends the expiry to: every top-up sends expiring again\n',
            );
        }
      }
      if (access) cli.out(`loaded ${(await putAccess(ctx.redis, access)).length} access area(s)`);
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
