/** Recharging an ID by hand: `tessera topup`. */
import { readCatalog } from '../../catalog/store';
import { CLI_NAME, MAX_OPERATOR_TOPUP } from '../../protocol/admin';
import { IDEMPOTENCY_KEY } from '../../protocol/sales';
import { Topups } from '../../sales/topup';
import { intArg, outcome, parseOptions, textArg, usageError, type Command } from '../command';

export const topupCommands: Record<string, Command> = {
  topup: {
    summary: "recharge a talk ID: adds --amount to its balance under its product's top-up rules, with a record",
    usage: 'ID --amount MICRO [--note TEXT] [--key KEY]',
    async run(cli) {
      const { values, positionals } = parseOptions(
        cli,
        { amount: { type: 'string' }, note: { type: 'string' }, key: { type: 'string' } },
        1,
      );
      const amount = intArg(values.amount, '--amount', { min: 1, max: MAX_OPERATOR_TOPUP, unit: 'micro-units' });
      if (values.key !== undefined && !IDEMPOTENCY_KEY.test(values.key))
        throw usageError('--key must be 8 to 128 of A-Z a-z 0-9 . _ : -');
      const ctx = await cli.ctx();
      const { products } = await readCatalog(ctx.redis);
      const topups = new Topups(ctx, (name) => products.get(name));
      const note = textArg(values.note, '--note') ?? process.env.USER ?? 'operator';
      return outcome(
        cli,
        await topups.operator(
          positionals[0],
          amount,
          note,
          values.key === undefined ? undefined : `${CLI_NAME}/${values.key}`,
        ),
      );
    },
  },
};
