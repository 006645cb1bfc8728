/** Minting IDs and handling one ID by hand: sell, block, unblock, look up. */
import { readCatalog } from '../../catalog/store';
import { activateId, idStatus, setIdState } from '../../ledger/ids';
import { mintBatches } from '../../ledger/mint';
import { intArg, openOut, outcome, parseOptions, textArg, usageError, type Command } from '../command';

/** The most IDs one `tessera mint` makes. */
const MAX_MINT = 10_000_000;

export const idCommands: Record<string, Command> = {
  mint: {
    summary: "mint IDs into a product's inventory; prints them (or writes --out, mode 0600) once",
    usage: '--product NAME --count N [--out FILE]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        product: { type: 'string' },
        count: { type: 'string' },
        out: { type: 'string' },
      });
      if (!values.product) throw usageError('--product is required');
      // A typo of a few digits would mint billions; larger runs are several runs.
      const count = intArg(values.count, '--count', { min: 1, max: MAX_MINT });
      const ctx = await cli.ctx();
      const product = (await readCatalog(ctx.redis)).products.get(values.product);
      // A refusal like any other, reason first, for the scripts that mint from a timer.
      if (!product) return outcome(cli, { ok: false, reason: 'unknown_product' });
      const out = openOut(values.out);
      const t0 = Date.now();
      // Each script call's IDs are written as soon as Redis confirmed them, straight to the file (no buffer):
      // whatever stops the mint, the file holds the IDs Redis holds.
      const r = await mintBatches(
        ctx,
        product,
        count,
        (ids) => out.write(ids.join('\n') + '\n'),
        undefined,
        out.closed,
      );
      await out.done();
      const where = values.out ? ` into ${values.out}` : '';
      if (r.stopped === undefined) {
        process.stderr.write(`minted ${r.minted} ID(s) of ${product.name} in ${Date.now() - t0} ms${where}\n`);
        return 0;
      }
      const left = count - r.minted;
      process.stderr.write(
        `mint stopped: ${r.stopped}\n` +
          (out.closed()
            ? `minted ${r.minted} of ${count} ID(s) of ${product.name}: every one is in Redis' inventory, but the output closed while they were printed, so which were read is not known (the rest are unsold stock that only the web shop can sell)\n`
            : `minted ${r.minted} of ${count} ID(s) of ${product.name}${where}: ${values.out ? 'the file holds' : 'printed are'} exactly the IDs Redis holds\n`) +
          (r.unknown > 0
            ? `${r.unknown} ID(s) in doubt: Redis did not say whether it holds them; they are not printed, and if Redis has them they stay unsold stock that only the web shop can sell\n`
            : '') +
          (left > 0
            ? `to mint the other ${left}: tessera mint --product ${product.name} --count ${left}${values.out ? ' --out ANOTHER_FILE' : ''}\n`
            : ''),
      );
      return 1;
    },
  },
  activate: {
    summary: 'sell an ID by hand: loads its face value and records the sale',
    usage: 'ID [--price MICRO] [--ref TEXT]',
    async run(cli) {
      const { values, positionals } = parseOptions(cli, { price: { type: 'string' }, ref: { type: 'string' } }, 1);
      const price = values.price === undefined ? undefined : intArg(values.price, '--price');
      return outcome(
        cli,
        await activateId(await cli.ctx(), positionals[0], {
          channel: 'manual',
          price,
          ref: textArg(values.ref, '--ref') ?? process.env.USER ?? '',
        }),
      );
    },
  },
  block: {
    summary: 'block an ID (its live calls are cut at their next tick)',
    usage: 'ID [--reason TEXT]',
    async run(cli) {
      const { values, positionals } = parseOptions(cli, { reason: { type: 'string' } }, 1);
      const reason = textArg(values.reason, '--reason') ?? '';
      return outcome(cli, await setIdState(await cli.ctx(), positionals[0], 'block', reason));
    },
  },
  unblock: {
    summary: 'lift a block',
    usage: 'ID',
    async run(cli) {
      const { positionals } = parseOptions(cli, {}, 1);
      return outcome(cli, await setIdState(await cli.ctx(), positionals[0], 'unblock'));
    },
  },
  lookup: {
    summary: "show an ID's state, balance and expiry",
    usage: 'ID',
    async run(cli) {
      const { positionals } = parseOptions(cli, {}, 1);
      return outcome(cli, await idStatus(await cli.ctx(), positionals[0]));
    },
  },
};
