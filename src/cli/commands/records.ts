/** The records Redis keeps: the conservation audit over them (and their archive), their export and archive. */
import { checkArchive, type ArchiveReport } from '../../ledger/archive-check';
import { audit } from '../../ledger/audit';
import { exportRecords } from '../../ledger/export';
import { ArchiveRunning, archiveRecords, SUMS } from '../../ledger/retention';
import { intArg, openOut, outcome, parseOptions, usageError, type Command } from '../command';

const AGE = /^(\d+)(d|h|m|s)$/;
const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 } as const;

export const recordCommands: Record<'audit' | 'export' | 'archive', Command> = {
  audit: {
    summary:
      'conservation check, from Redis alone: for every ID, value sold + top-ups = balance + calls + redemptions + refunds + vouchers sent + expired (value left at expiry, forfeited); with --archive DIR, also that the archive files under DIR add up, per ID, to the checkpoints of the records archive trimmed (each line a record of its bucket, none twice); exit 1 on any difference',
    usage: '[--json] [--max N] [--archive DIR]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        json: { type: 'boolean', default: false },
        max: { type: 'string', default: '50' },
        archive: { type: 'string' },
      });
      const max = intArg(values.max, '--max');
      const ctx = await cli.ctx();
      let a: ArchiveReport | undefined;
      if (values.archive !== undefined) {
        try {
          a = await checkArchive(ctx, values.archive);
        } catch (err) {
          if (err instanceof ArchiveRunning) return outcome(cli, { ok: false, reason: err.reason });
          throw err;
        }
      }
      const r = await audit(ctx);
      const ok = r.problems.length === 0 && (a?.problems.length ?? 0) === 0;
      if (values.json) process.stdout.write(JSON.stringify({ ...r, ...(a && { archive: a }), ok }) + '\n');
      else {
        const n = (v: number): string => v.toLocaleString('en');
        process.stdout.write(
          `${n(r.ids)} IDs, ${n(r.sold)} sold: value sold ${n(r.valueSold)} + top-ups ${n(r.topups)} = balances ${n(r.balances)} + calls ${n(r.calls)} + redemptions ${n(r.redeemed)} + refunds ${n(r.refunded)} + vouchers sent ${n(r.vouchers)} + expired ${n(r.expired)}\n`,
        );
        for (const p of r.problems.slice(0, max)) {
          process.stdout.write(
            `  bucket ${p.bucket} id ${p.id} (${p.state || 'no ID'}): ${p.problem}; sold ${p.sold}, balance ${p.balance}, calls ${p.calls}, redeemed ${p.redeemed}, refunded ${p.refunded}, top-ups ${p.topups}, vouchers ${p.vouchers}, expired ${p.expired}, difference ${p.difference}\n`,
          );
        }
        if (r.problems.length > max) process.stdout.write(`  … and ${r.problems.length - max} more (--max, --json)\n`);
        // One ID may have several problems (a forged balance is also a reservation that does not add up).
        const wrong = new Set(r.problems.map((p) => `${p.bucket}/${p.id}`)).size;
        process.stdout.write(
          r.problems.length === 0 ? 'audit: ok, every ID balances\n' : `audit: ${wrong} ID(s) do not balance\n`,
        );
        if (a) {
          process.stdout.write(
            `archive ${values.archive}: ${n(a.files)} file(s), ${n(a.records)} record(s) against ${n(a.ids)} checkpointed ID(s)${a.inRedis ? `; ${n(a.inRedis)} more still in Redis, not trimmed yet` : ''}\n`,
          );
          for (const p of a.problems.slice(0, max)) {
            const where =
              p.id !== undefined ? `bucket ${p.bucket} id ${p.id}` : `${p.file}${p.line ? ` line ${p.line}` : ''}`;
            const sums = SUMS.filter((k) => p.archived?.[k] !== p.checkpoint?.[k]).map(
              (k) => `${k} archived ${p.archived![k]}, checkpoint ${p.checkpoint![k]}`,
            );
            process.stdout.write(`  ${where}: ${p.problem}${sums.length ? `; ${sums.join('; ')}` : ''}\n`);
          }
          if (a.problems.length > max)
            process.stdout.write(`  … and ${a.problems.length - max} more (--max, --json)\n`);
          process.stdout.write(
            a.problems.length === 0
              ? 'archive: ok, every checkpoint is what its archived records add up to\n'
              : `archive: ${a.problems.length} problem(s)\n`,
          );
        }
      }
      return ok ? 0 : 1;
    },
  },
  export: {
    summary: 'export records: calls (CDRs), redemptions or sales, as CSV or NDJSON',
    usage: 'calls|redemptions|sales [--format csv|ndjson] [--since MS] [--until MS] [--out FILE]',
    async run(cli) {
      const { values, positionals } = parseOptions(
        cli,
        {
          format: { type: 'string', default: 'csv' },
          since: { type: 'string' },
          until: { type: 'string' },
          out: { type: 'string' },
        },
        1,
      );
      const kind = positionals[0];
      if (kind !== 'calls' && kind !== 'sales' && kind !== 'redemptions')
        throw usageError('export calls|redemptions|sales');
      if (values.format !== 'csv' && values.format !== 'ndjson') throw usageError('--format csv|ndjson');
      const since = values.since === undefined ? undefined : intArg(values.since, '--since');
      const until = values.until === undefined ? undefined : intArg(values.until, '--until');
      if (since !== undefined && until !== undefined && since > until)
        throw usageError('--since must not be after --until');
      const out = openOut(values.out);
      const n = await exportRecords(await cli.ctx(), kind, values.format, out.write, { since, until });
      await out.done();
      process.stderr.write(`exported ${n} record(s)\n`);
    },
  },
  archive: {
    summary:
      'archive records older than an age to NDJSON files under DIR (one per stream and bucket, fsynced), then trim them from Redis; the audit still balances',
    usage: '--out DIR (--older-than AGE | --before MS)   AGE: 90d, 36h, 30m, 600s',
    async run(cli) {
      const { values } = parseOptions(cli, {
        out: { type: 'string' },
        'older-than': { type: 'string' },
        before: { type: 'string' },
      });
      if (!values.out) throw usageError('--out DIR is required');
      const age = values['older-than'];
      if ((age === undefined) === (values.before === undefined))
        throw usageError('give --older-than AGE or --before MS');
      let before: number;
      if (age !== undefined) {
        const m = AGE.exec(age);
        if (!m) throw usageError('--older-than must be a whole number and a unit: 90d, 36h, 30m, 600s');
        before = Date.now() - Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
      } else before = intArg(values.before, '--before');
      let n;
      try {
        n = await archiveRecords(await cli.ctx(), values.out, before);
      } catch (err) {
        if (err instanceof ArchiveRunning) return outcome(cli, { ok: false, reason: err.reason });
        throw err;
      }
      process.stderr.write(
        `archived and trimmed ${n.calls} call record(s), ${n.sales} sale record(s), ${n.redemptions} redemption record(s) written before ${new Date(before).toISOString()} into ${values.out}\n`,
      );
    },
  },
};
