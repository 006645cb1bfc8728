/** Webhook deliveries: what is pending and what failed, and another try for the failed ones. */
import { eventReport, retryAllFailed, retryFailed } from '../../hooks/inspect';
import { intArg, parseOptions, usageError, type Command } from '../command';

export const eventCommands: Record<'events', Command> = {
  events: {
    summary:
      'webhook deliveries: pending and failed (counts per type, oldest age, entries); --retry puts failed ones back',
    usage: '[--limit N] [--json] | --retry REF [--retry REF …] | --retry-all',
    async run(cli) {
      const { values } = parseOptions(cli, {
        limit: { type: 'string', default: '20' },
        json: { type: 'boolean', default: false },
        retry: { type: 'string', multiple: true },
        'retry-all': { type: 'boolean', default: false },
      });
      const ctx = await cli.ctx();
      const buckets = ctx.cfg.buckets;
      if (values['retry-all'] && values.retry) throw usageError('--retry and --retry-all do not go together');
      if (values['retry-all']) {
        cli.out(`requeued ${await retryAllFailed(ctx.redis, ctx.scripts, buckets)} failed deliveries`);
        return 0;
      }
      if (values.retry) {
        let missing = 0;
        for (const ref of values.retry) {
          if (await retryFailed(ctx.scripts, buckets, ref)) cli.out(`requeued ${ref}`);
          else {
            process.stderr.write(`no failed delivery ${ref}\n`);
            missing++;
          }
        }
        return missing === 0 ? 0 : 1;
      }
      const limit = intArg(values.limit, '--limit');
      const r = await eventReport(ctx.redis, buckets, limit);
      if (values.json) {
        cli.out(JSON.stringify(r));
        return 0;
      }
      const counts = (c: typeof r.pending): string =>
        `${c.total}${
          c.total
            ? ` (${Object.entries(c.byType)
                // Most first, then by name: the streams' order is the order deliveries failed in.
                .sort(([a, m], [b, n]) => n - m || a.localeCompare(b))
                .map(([t, n]) => `${t} ${n}`)
                .join(', ')}; oldest ${Math.round(c.oldestAgeMs / 1000)} s)`
            : ''
        }`;
      cli.out(`pending: ${counts(r.pending)}`);
      cli.out(`failed: ${counts(r.failed)}`);
      for (const row of r.rows) cli.out(JSON.stringify(row));
      if (r.failed.total > 0) cli.out('retry with: tessera events --retry REF (or --retry-all)');
      return 0;
    },
  },
};
