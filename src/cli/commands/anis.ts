/** Caller numbers (ANI login) of one ID, by hand: add (or move from another ID), remove, list. */
import { readCatalog } from '../../catalog/store';
import { AniRegistry, aniTermsOf } from '../../ledger/anis';
import { locate } from '../../ledger/ids';
import type { Context } from '../../app/context';
import { outcome, parseOptions, usageError, type Command } from '../command';

const registry = (ctx: Context): AniRegistry =>
  new AniRegistry(ctx, async (product) => aniTermsOf((await readCatalog(ctx.redis)).products.get(product)));

export const aniCommands: Record<string, Command> = {
  ani: {
    summary:
      "an ID's caller numbers: add (--move takes it from the ID it is registered to), remove, list; " +
      'the product limit holds, the owner change rate does not',
    usage: 'add ID NUMBER [--move] | remove ID NUMBER | list ID',
    async run(cli) {
      const action = cli.args[0];
      if (action !== 'add' && action !== 'remove' && action !== 'list') throw usageError('ani: add, remove or list');
      const sub = { ...cli, args: cli.args.slice(1) };
      const { values, positionals } = parseOptions(
        sub,
        action === 'add' ? { move: { type: 'boolean' } } : {},
        action === 'list' ? 1 : 2,
      );
      const ctx = await cli.ctx();
      const loc = locate(ctx, positionals[0]);
      if (!loc.ok) return outcome(cli, loc);
      const anis = registry(ctx);
      if (action === 'list') {
        if (!(await ctx.redis.exists(loc.key))) return outcome(cli, { ok: false, reason: 'unknown_id' });
        const listed = { ok: true, numbers: (await anis.list(loc.key)).map((n) => `+${n}`) };
        return outcome(cli, listed);
      }
      const r =
        action === 'add'
          ? await anis.add(loc.key, positionals[1], { role: 'operator', move: values.move === true })
          : await anis.remove(loc.key, positionals[1], { role: 'operator' });
      if (!r.ok) return outcome(cli, r);
      const changed = { ok: true, change: r.change, numbers: (await anis.list(loc.key)).map((n) => `+${n}`) };
      return outcome(cli, changed);
    },
  },
};
