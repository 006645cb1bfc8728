/**
 * What the per-ID conservation check cannot see: a charge or credit applied
 * twice balances on its own ID (the second record took the balance too). So
 * the audit also gathers, from the records it reads anyway, without a Redis
 * call of its own:
 *  - call records per call (switch + call id): one, or one and a `late` one
 *    after it (a late stop after the reaper's `stale` record or after a stop
 *    under another token name; lua/includes/late.lua writes at most one, only
 *    after the call's record, and never after a `recovered` one: a stop of a
 *    recovered call is a repeat);
 *  - redemption records per scan (scanner + scan id): one redemption, and at
 *    most one reversal, only of a redemption (lua/reverse.lua);
 *  - top-up records per ID and reference (source + ref, as lua/topup.lua
 *    dedupes them): one;
 *  - recharge voucher transfers (ref `<voucher hash>:<n>`): what the
 *    voucher's records took out (a return counts negative) equals what the
 *    `voucher` top-ups of that ref credited.
 * A record archived and trimmed is gone: its twin still in Redis is not seen
 * as a double, a late record or a reversal on an ID with trimmed records may
 * have had its call record or redemption trimmed, and a transfer with one
 * side trimmed (the voucher's or the target's checkpoint carries such sums)
 * is not checked.
 */

/** Problems found on one ID of a bucket, by ID hash. */
export type IdProblems = Map<string, string[]>;

const add = (out: IdProblems, id: string, problem: string): void => {
  const list = out.get(id);
  if (list) list.push(problem);
  else out.set(id, [problem]);
};

/** One call's records, in stream order. */
interface CallRecords {
  id: string;
  closed: number;
  late: number;
  /** The cause of the latest record. */
  last: string | undefined;
  /** Where a late record stands that no late stop writes: before its call's record, or after a recovered one. */
  misplaced: string | undefined;
}

/** One bucket's records, counted per call, scan and top-up reference. */
export class BucketDoubles {
  private readonly calls = new Map<string, CallRecords>();
  private readonly scans = new Map<string, { id: string; redeemed: number; reversed: number }>();
  private readonly topups = new Map<string, number>();

  call(r: Record<string, string | undefined>): void {
    const k = `${r.switch ?? ''}\n${r.call ?? ''}`;
    let c = this.calls.get(k);
    if (!c) this.calls.set(k, (c = { id: r.id ?? '', closed: 0, late: 0, last: undefined, misplaced: undefined }));
    const cause = r.cause ?? '';
    // Records come in stream order: a late one follows the record that closed its call.
    if (cause === 'late') {
      c.late++;
      if (c.last === 'recovered') c.misplaced ??= 'after its recovered record';
    } else {
      c.closed++;
      if (c.last === 'late') c.misplaced ??= cause ? `before its ${cause} record` : 'before its call record';
    }
    c.last = cause;
  }

  redemption(r: Record<string, string | undefined>): void {
    const k = `${r.scanner ?? ''}\n${r.scan ?? ''}`;
    let s = this.scans.get(k);
    if (!s) this.scans.set(k, (s = { id: r.id ?? '', redeemed: 0, reversed: 0 }));
    if (r.type === 'reverse') s.reversed++;
    else s.redeemed++;
  }

  topup(r: Record<string, string | undefined>): void {
    const k = `${r.id ?? ''}\n${r.source ?? ''}:${r.ref ?? ''}`;
    this.topups.set(k, (this.topups.get(k) ?? 0) + 1);
  }

  /** The doubles found, by ID hash; `carried`: IDs with trimmed records (a reversal's redemption may be one). */
  problems(carried: ReadonlyMap<string, unknown>): IdProblems {
    const out: IdProblems = new Map();
    for (const [k, c] of this.calls) {
      const [sw, call] = k.split('\n') as [string, string];
      if (c.closed > 1 || c.late > 1)
        add(out, c.id, `call ${sw}/${call} billed twice: ${c.closed} call records and ${c.late} late`);
      // A late stop bills past the record that closed the call, in the same stream: alone, its
      // record was forged, or the one before it was trimmed (an ID with a checkpoint).
      else if (c.late > 0 && c.closed === 0 && !carried.has(c.id))
        add(out, c.id, `call ${sw}/${call} has a late record but no call record`);
      else if (c.misplaced !== undefined) add(out, c.id, `call ${sw}/${call} has a late record ${c.misplaced}`);
    }
    for (const [k, s] of this.scans) {
      const [scanner, scan] = k.split('\n') as [string, string];
      if (s.redeemed > 1) add(out, s.id, `scan ${scanner}/${scan} recorded ${s.redeemed} times`);
      if (s.reversed > s.redeemed && !(s.redeemed === 0 && carried.has(s.id)))
        add(out, s.id, `scan ${scanner}/${scan} reversed ${s.reversed} times, redeemed ${s.redeemed}`);
    }
    for (const [k, n] of this.topups) {
      if (n < 2) continue;
      const [id, ref] = k.split('\n') as [string, string];
      add(out, id, `top-up ${ref} applied ${n} times`);
    }
    return out;
  }
}

interface Transfer {
  voucher: string;
  bucket: number;
  target: string;
  out: number;
  in: number;
}

/** Recharge voucher transfers across all buckets, by ref. */
export class VoucherTransfers {
  private readonly byRef = new Map<string, Transfer>();
  /** IDs whose trimmed records (their checkpoint) hold voucher transfers or top-ups. */
  private readonly trimmed = new Set<string>();
  /** Transfers in progress (`<voucher hash>:<n>` of a voucher whose transfer is sent, not settled). */
  private readonly open = new Set<string>();

  private of(ref: string, voucher: string, bucket: number): Transfer {
    let t = this.byRef.get(ref);
    if (!t) this.byRef.set(ref, (t = { voucher, bucket, target: '', out: 0, in: 0 }));
    return t;
  }

  /** A voucher's transfer record (its `id` the voucher). */
  taken(bucket: number, r: Record<string, string | undefined>): void {
    const t = this.of(r.ref ?? '', r.id ?? '', bucket);
    t.out += Number(r.amount);
    t.bucket = bucket;
    t.target ||= r.to ?? '';
  }

  /** A `voucher` top-up record (its `id` the target, `note` the voucher). */
  credited(r: Record<string, string | undefined>): void {
    const ref = r.ref ?? '';
    const voucher = r.note ?? '';
    const t = this.of(ref, voucher, -1);
    t.in += Number(r.amount);
    t.target ||= r.id ?? '';
  }

  carried(id: string): void {
    this.trimmed.add(id);
  }

  /** The voucher's transfer state (its hash's `tst`, `tn`). */
  voucherState(id: string, tst: string | null, tn: string | null): void {
    if (tst === 'sent' && tn) this.open.add(`${id}:${tn}`);
  }

  /** Transfers whose two sides differ: [voucher, bucket (-1 when no voucher record), problem]. */
  *problems(): Generator<[string, number, string]> {
    for (const [ref, t] of this.byRef) {
      if (t.out === t.in || this.open.has(ref)) continue;
      if (this.trimmed.has(t.voucher) || this.trimmed.has(t.target)) continue;
      yield [t.voucher, t.bucket, `voucher transfer ${ref} took ${t.out} but credited ${t.in} to ${t.target}`];
    }
  }
}
