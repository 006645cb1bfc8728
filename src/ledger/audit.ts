/**
 * The conservation check: for every ID, from Redis alone,
 *   value sold + top-ups = balance + calls billed + redemptions + refunds + vouchers + expired
 * where value sold comes from its sale record, top-ups from its top-up records
 * (money in: a voucher's value, an operator's, an online recharge), expired
 * from its expiry record (the value left on it at its expiry, forfeited), vouchers
 * from a recharge voucher's transfer records (its value out into another ID;
 * a returned transfer counts negative), calls billed from its call
 * records plus what its live calls have taken so far, redemptions from the
 * redemption records (reversals count negative) and refunds from the refund
 * records. Entries and uses count like money: face = entries, a redemption
 * takes its quantity. Any ID for which this does not hold is reported, as is
 * an ID sold twice, a record for an ID that does not exist, and value on an ID
 * that was never sold. Records archived and trimmed count through their IDs'
 * checkpoint, which holds the same sums over them. A charge or credit
 * recorded twice balances on its ID; the doubles and voucher transfers that
 * do not match are reported too (src/ledger/doubles.ts).
 *
 * The check reads one bucket at a time; on a system taking traffic a call or
 * redemption that completes between two reads can show as a difference that
 * is gone on the next run.
 */
import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { scanIdKeys } from '../redis/scan';
import { BucketDoubles, VoucherTransfers } from './doubles';
import { redemptionFields } from './redemption-record';
import { readStream } from './records';
import { noneCarried, readCheckpoint, salesSumOf } from './retention';

export interface AuditRow {
  bucket: number;
  id: string;
  state: string;
  sold: number;
  balance: number;
  calls: number;
  redeemed: number;
  refunded: number;
  topups: number;
  vouchers: number;
  /** Value forfeited at expiry (its expiry record). */
  expired: number;
  /** sold + topups − (balance + calls + redeemed + refunded + vouchers + expired): 0 when the books balance. */
  difference: number;
  problem: string;
}

export interface AuditReport {
  ids: number;
  sold: number;
  valueSold: number;
  balances: number;
  calls: number;
  redeemed: number;
  refunded: number;
  topups: number;
  vouchers: number;
  expired: number;
  problems: AuditRow[];
}

interface Sums {
  sold: number;
  sales: number;
  calls: number;
  redeemed: number;
  refunded: number;
  /** What the ID's live calls hold (their reservations). */
  reserved: number;
  topups: number;
  vouchers: number;
  expired: number;
}

export async function audit(ctx: Context): Promise<AuditReport> {
  const report: AuditReport = {
    ids: 0,
    sold: 0,
    valueSold: 0,
    balances: 0,
    calls: 0,
    redeemed: 0,
    refunded: 0,
    topups: 0,
    vouchers: 0,
    expired: 0,
    problems: [],
  };
  const idsByBucket = new Map<number, string[]>();
  for await (const { bucket, hash } of scanIdKeys(ctx.redis)) {
    const list = idsByBucket.get(bucket);
    if (list) list.push(hash);
    else idsByBucket.set(bucket, [hash]);
  }
  const transfers = new VoucherTransfers();
  for (let b = 0; b < ctx.cfg.buckets; b++) {
    const doubles = new BucketDoubles();
    const sums = new Map<string, Sums>();
    const of = (id: string): Sums => {
      let s = sums.get(id);
      if (!s) sums.set(id, (s = { ...noneCarried(), reserved: 0 }));
      return s;
    };
    // Records archived and trimmed count through their checkpoint (src/ledger/retention.ts).
    const checkpoint = await readCheckpoint(ctx, keys.checkpoint(b));
    for (const [id, c] of checkpoint) {
      if (c.vouchers !== 0 || c.topups !== 0) transfers.carried(id);
      const s = of(id);
      s.sold += c.sold;
      s.sales += c.sales;
      s.calls += c.calls;
      s.redeemed += c.redeemed;
      s.refunded += c.refunded;
      s.topups += c.topups;
      s.vouchers += c.vouchers;
      s.expired += c.expired;
    }
    for await (const { fields: r } of readStream(ctx, keys.sales(b))) {
      const [sum, field] = salesSumOf(r.type);
      const s = of(r.id!);
      s[sum] += Number(r[field]);
      if (sum === 'sold') s.sales++;
      if (r.type === 'topup') {
        doubles.topup(r);
        if (r.source === 'voucher') transfers.credited(r);
      } else if (r.type === 'voucher') transfers.taken(b, r);
    }
    for await (const { fields: r } of readStream(ctx, keys.cdr(b))) {
      of(r.id!).calls += Number(r.cost);
      doubles.call(r);
    }
    for await (const { fields: r } of readStream(ctx, keys.redemptions(b), '-', '+', redemptionFields)) {
      of(r.id!).redeemed += Number(r.amount);
      doubles.redemption(r);
    }
    const doubled = doubles.problems(checkpoint);
    // Live calls have taken what they paid so far from the balance but have no record yet,
    // and hold reservations: what the ID does not have free must be their sum.
    for (const session of await ctx.redis.zrange(keys.live(b), '0', '-1')) {
      const [st, idh, paid, res] = await ctx.scripts.run<[string?, string?, number?, number?]>(
        'call_held',
        [session],
        [],
      );
      if (st !== 'live' || !idh) continue;
      const s = of(idh);
      s.calls += paid ?? 0;
      s.reserved += res ?? 0;
    }

    const ids = idsByBucket.get(b) ?? [];
    const seen = new Set<string>();
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const pipe = ctx.redis.pipeline();
      for (const id of chunk) pipe.hmget(keys.id(b, id), 'st', 'bal', 'free', 'tst', 'tn');
      const rows = (await pipe.exec()) ?? [];
      chunk.forEach((id, j) => {
        const [st, bal, free, tst, tn] = (rows[j]?.[1] ?? []) as (string | null)[];
        seen.add(id);
        transfers.voucherState(id, tst ?? null, tn ?? null);
        for (const problem of doubled.get(id) ?? [])
          report.problems.push(row(b, id, st ?? '', Number(bal ?? 0), sums.get(id), problem));
        // A balance that is no whole number (a damaged hash) is a problem of its own: as a number
        // it would be NaN, and every total it went into would be NaN too.
        if (bal != null && !WHOLE.test(bal)) {
          report.ids++;
          report.problems.push(
            row(b, id, st ?? '', 0, sums.get(id), `balance ${JSON.stringify(bal)} is no whole number of micro-units`),
          );
          return;
        }
        const r = check(report, b, id, st ?? '', Number(bal ?? 0), sums.get(id));
        const reserved = sums.get(id)?.reserved ?? 0;
        // `free` is empty (or absent) until the ID's first call: then all of the balance is free.
        const held = free == null || free === '' ? 0 : Number(bal ?? 0) - Number(free);
        if (r && held !== reserved)
          report.problems.push({ ...r, problem: `reserved ${held} but live calls hold ${reserved}` });
        else if (r && reserved > r.balance)
          report.problems.push({ ...r, problem: `live calls hold ${reserved}, more than the balance` });
      });
    }
    for (const [id, s] of sums)
      if (!seen.has(id)) report.problems.push(row(b, id, '', 0, s, 'records for an ID that does not exist'));
  }
  for (const [voucher, bucket, problem] of transfers.problems())
    report.problems.push(row(bucket, voucher, '', 0, undefined, problem));
  return report;
}

/** A balance as the scripts write it: whole micro-units. */
const WHOLE = /^-?[0-9]+$/;

function row(
  bucket: number,
  id: string,
  state: string,
  balance: number,
  s: Sums | undefined,
  problem: string,
): AuditRow {
  const sold = s?.sold ?? 0;
  const calls = s?.calls ?? 0;
  const redeemed = s?.redeemed ?? 0;
  const refunded = s?.refunded ?? 0;
  const topups = s?.topups ?? 0;
  const vouchers = s?.vouchers ?? 0;
  const expired = s?.expired ?? 0;
  return {
    bucket,
    id,
    state,
    sold,
    balance,
    calls,
    redeemed,
    refunded,
    topups,
    vouchers,
    expired,
    difference: sold + topups - (balance + calls + redeemed + refunded + vouchers + expired),
    problem,
  };
}

function check(
  report: AuditReport,
  bucket: number,
  id: string,
  state: string,
  balance: number,
  s: Sums | undefined,
): AuditRow | undefined {
  report.ids++;
  report.balances += balance;
  if (!s || s.sales === 0) {
    // Never sold: nothing may have been loaded onto it or taken from it.
    if (balance !== 0 || s)
      report.problems.push(row(bucket, id, state, balance, s, 'value or records on an ID that was never sold'));
    return undefined;
  }
  report.sold++;
  report.valueSold += s.sold;
  report.calls += s.calls;
  report.redeemed += s.redeemed;
  report.refunded += s.refunded;
  report.topups += s.topups;
  report.vouchers += s.vouchers;
  report.expired += s.expired;
  const r = row(bucket, id, state, balance, s, '');
  if (s.sales > 1) report.problems.push({ ...r, problem: `sold ${s.sales} times` });
  else if (r.difference !== 0)
    report.problems.push({ ...r, problem: r.difference > 0 ? 'value missing' : 'more taken than sold' });
  return r;
}
