/** The demo: catalog, tokens, one sold ID and stock on sale, in one command. */
import { join } from 'node:path';
import { readAccessFile, readPlansFile, readProductsFile } from '../../catalog/files';
import { createToken, putAccess, putPlans, putProducts } from '../../catalog/store';
import { activateId } from '../../ledger/ids';
import { mintIds } from '../../ledger/mint';
import { findRepoDir } from '../../redis/scripts';
import { Inventory } from '../../sales/inventory';
import type { Command } from '../command';

export const demoCommands: Record<string, Command> = {
  demo: {
    summary:
      'load the demo catalog and access numbers, create demo tokens, mint and activate one demo ID, put 20 of each talk product on sale',
    async run(cli) {
      const ctx = await cli.ctx();
      const dir = findRepoDir(join('deploy', 'demo'));
      await putPlans(ctx.redis, readPlansFile(join(dir, 'rates.csv')));
      const products = await putProducts(ctx.redis, readProductsFile(join(dir, 'products.json')));
      const areas = await putAccess(ctx.redis, readAccessFile(join(dir, 'access.csv')));
      const sw = await createToken(ctx.redis, { name: `demo-switch-${Date.now().toString(36)}`, role: 'switch' });
      const admin = await createToken(ctx.redis, { name: `demo-admin-${Date.now().toString(36)}`, role: 'admin' });
      const ids: string[] = [];
      await mintIds(ctx, products[0]!, 1, (id) => ids.push(id));
      const act = await activateId(ctx, ids[0], { channel: 'manual', price: products[0]!.price, ref: 'demo' });
      if (!act.ok) throw new Error(`activation failed: ${act.reason}`);
      // Stock for the buy page: the numbers are not printed, buyers get them when they pay.
      const inventory = new Inventory(ctx);
      const onSale: Record<string, number> = {};
      for (const p of products.filter((x) => x.kind === 'talk')) {
        await mintIds(ctx, p, 20, () => undefined);
        onSale[p.name] = await inventory.available(p.name);
      }
      cli.out(
        JSON.stringify(
          {
            id: ids[0],
            product: products[0]!.name,
            balance: act.balance,
            switchToken: sw.token,
            adminToken: admin.token,
            onSale,
            accessAreas: areas.map((a) => a.area),
          },
          null,
          2,
        ),
      );
    },
  },
};
