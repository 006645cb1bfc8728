/** A sold ID: its sale record, and its refund through the card company. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../config/config';
import { lookupSale } from '../../ledger/sale-lookup';
import { refundSale } from '../../sales/admin';
import { HttpProvider } from '../../sales/provider';
import { outcome, parseOptions, textArg, type Command } from '../command';

function readIfExists(file: string): string | undefined {
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

export const saleCommands: Record<string, Command> = {
  'sale-lookup': {
    summary:
      'show a sold ID: its state and balance, its sale record (price, provider reference, commission, net) and any refund',
    usage: 'ID',
    async run(cli) {
      const { positionals } = parseOptions(cli, {}, 1);
      return outcome(cli, await lookupSale(await cli.ctx(), positionals[0]));
    },
  },
  'sale-refund': {
    summary:
      'refund an unused sold ID: block it, record the refund, void the payment at the card company (PROVIDER_URL)',
    usage: 'ID [--reason TEXT]',
    async run(cli) {
      const { values, positionals } = parseOptions(cli, { reason: { type: 'string' } }, 1);
      // Checked before Redis is touched: without the card company nothing should change.
      const cfg = loadConfig();
      const { key, timeoutMs } = cfg.provider;
      // With npm start's own sandbox, the gateway writes where it listens next to redis.url.
      const url = cfg.provider.url ?? readIfExists(join(cfg.dataDir, 'provider.url'));
      if (!url) {
        throw Object.assign(
          new Error(
            'PROVIDER_URL is not set: a refund voids the payment at the card company, so the CLI must know where it is. ' +
              "Set PROVIDER_URL (and PROVIDER_KEY) as the gateway has them; with `npm start`'s own sandbox, use the URL it logs at start, " +
              'or refund through the gateway: POST /v1/admin/sales/{id}/refund with an admin token',
          ),
          { code: 'ERR_PARSE_ARGS_MISSING' },
        );
      }
      const ctx = await cli.ctx();
      const operator = `cli:${process.env.USER ?? process.env.LOGNAME ?? 'unknown'}`;
      const r = await refundSale(
        ctx,
        new HttpProvider(url, timeoutMs, key),
        positionals[0],
        textArg(values.reason, '--reason') ?? '',
        operator,
      );
      const code = outcome(cli, r);
      if (r.ok && r.provider !== 'voided' && r.provider !== 'not_paid_through_a_provider') {
        // The ID is blocked and the refund recorded either way; only the money is in doubt. A void
        // the card company refused is its answer, not a lost one: asking again does not change it.
        process.stderr.write(
          r.provider.startsWith('void_refused')
            ? `the card company refused the void (${r.provider}): the buyer is not paid back; settle it with the card company (the ID is blocked and the refund recorded)\n`
            : `the card company did not confirm the void (${r.provider}): run the same refund again, it only repeats the void\n`,
        );
        return 1;
      }
      return code;
    },
  },
};
