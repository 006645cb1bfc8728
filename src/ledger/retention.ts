/**
 * Retention of the record streams: records older than a cut-off are archived
 * to files an operator keeps, then trimmed from Redis, their IDs' sums carried
 * forward in a per-bucket checkpoint so the conservation audit still balances.
 *
 * Per stream and bucket, in pages of up to 1000 records, oldest first:
 *  1. the page's records not yet in the archive file are appended to it and
 *     the file is fsynced;
 *  2. lua/trim adds the page to the checkpoint and trims it, in one step.
 * A crash after 1 leaves records both in the file and in Redis: the next run
 * finds them in the file (its last record id) and only trims them. A crash
 * inside 2 is impossible (one script call). So a run repeated, or resumed
 * after any crash, writes each record to its file exactly once.
 *
 * Runs do not overlap: two at once would each append a page before either
 * trimmed it, and the files would hold those records twice. A run holds
 * ts:archive:lock (its own token, a TTL renewed page by page) or is refused.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readSync, fstatSync, ftruncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { decodeOf, exportRow, streamOf, type RecordKind } from './export';
import { trimArchived, type TrimStream } from './scripts';

const PAGE = 1000;
export const KINDS: readonly RecordKind[] = ['calls', 'sales', 'redemptions'];
const TRIM_NAME: Record<RecordKind, TrimStream> = { calls: 'cdr', sales: 'sales', redemptions: 'red' };

/** How many records of each kind a run archived and trimmed. */
export type ArchiveCounts = Record<RecordKind, number>;

/** Where a bucket's archived records of one kind go: `<dir>/<kind>/b<bucket>.ndjson`. */
export const archiveFile = (dir: string, kind: RecordKind, bucket: number): string =>
  join(dir, kind, `b${bucket}.ndjson`);

/** Orders stream ids ("ms-seq"). */
export function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am !== bm ? (am < bm ? -1 : 1) : as === bs ? 0 : as < bs ? -1 : 1;
}

/**
 * The stream id of the last record of an archive file (undefined if none). A
 * last line cut short by a crash is cut off: its record is still in Redis.
 */
function lastArchived(fd: number): string | undefined {
  const size = fstatSync(fd).size;
  if (size === 0) return undefined;
  const tail = Buffer.alloc(Math.min(size, 64 * 1024));
  readSync(fd, tail, 0, tail.length, size - tail.length);
  // In bytes: the tail may start inside a character, which as text would count as more bytes than it
  // has and move the cut into the half line; a '\n' byte is never part of a character.
  const end = tail.lastIndexOf(0x0a);
  if (end < tail.length - 1) ftruncateSync(fd, size - tail.length + end + 1);
  if (end < 0) return undefined;
  const line = tail.subarray(end > 0 ? tail.lastIndexOf(0x0a, end - 1) + 1 : 0, end).toString('utf8');
  const record = (JSON.parse(line) as { record?: string }).record ?? '';
  return record.slice(record.indexOf('/') + 1);
}

/** How long the archive lock outlives a run that stopped renewing it (a crash): a resumed run waits at most this. */
export const ARCHIVE_LOCK_MS = 60_000;

/** Another run holds the archive lock: the CLI's `refused: archive_running`. */
export class ArchiveRunning extends Error {
  readonly reason = 'archive_running';
  constructor() {
    super('another archive run holds ts:archive:lock');
  }
}

/**
 * Runs `work` holding ts:archive:lock (the archive, or the check of its files
 * against the checkpoints, which a trim between its reads would fool). `hold`
 * renews the lock; call it at least every ARCHIVE_LOCK_MS. Throws
 * ArchiveRunning, having run nothing, while another run holds it, and from
 * `hold` once it is another run's (this one stalled past its TTL).
 */
export async function withArchiveLock<T>(ctx: Context, work: (hold: () => Promise<void>) => Promise<T>): Promise<T> {
  const token = randomUUID();
  if ((await ctx.redis.set(keys.archiveLock, token, 'PX', ARCHIVE_LOCK_MS, 'NX')) !== 'OK') throw new ArchiveRunning();
  try {
    return await work(async () => {
      if ((await ctx.redis.get(keys.archiveLock)) !== token) throw new ArchiveRunning();
      await ctx.redis.pexpire(keys.archiveLock, ARCHIVE_LOCK_MS);
    });
  } finally {
    // Released only if still ours: a run that lost it must not free the next run's.
    if ((await ctx.redis.get(keys.archiveLock)) === token) await ctx.redis.del(keys.archiveLock);
  }
}

/**
 * Archives and trims every record written before `before` (ms) into `dir`.
 * Files are created mode 0600 and appended to, never rewritten. Throws
 * ArchiveRunning, having touched nothing, while another run is at work.
 */
export async function archiveRecords(ctx: Context, dir: string, before: number): Promise<ArchiveCounts> {
  return withArchiveLock(ctx, (hold) => archiveLocked(ctx, dir, before, hold));
}

async function archiveLocked(
  ctx: Context,
  dir: string,
  before: number,
  hold: () => Promise<void>,
): Promise<ArchiveCounts> {
  const counts: ArchiveCounts = { calls: 0, sales: 0, redemptions: 0 };
  for (const kind of KINDS) {
    const kindDir = join(dir, kind);
    mkdirSync(kindDir, { recursive: true, mode: 0o700 });
    for (let b = 0; b < ctx.cfg.buckets; b++) {
      const key = streamOf[kind](b);
      let fd: number | undefined;
      try {
        let last: string | undefined;
        for (;;) {
          const page = await ctx.redis.xrange(key, '-', `(${before}-0`, 'COUNT', PAGE);
          if (page.length === 0) break;
          await hold();
          if (fd === undefined) {
            fd = openSync(archiveFile(dir, kind, b), 'a+', 0o600);
            last = lastArchived(fd);
          }
          const fresh = page.filter(([id]) => last === undefined || compareIds(id, last) > 0);
          if (fresh.length > 0) {
            const text = fresh
              .map(([id, flat]) => JSON.stringify(exportRow(b, id, decodeOf[kind](flat))) + '\n')
              .join('');
            writeSync(fd, text);
            fsyncSync(fd);
            last = fresh[fresh.length - 1]![0];
          }
          counts[kind] += await trimArchived(ctx.scripts, b, TRIM_NAME[kind], page[page.length - 1]![0]);
        }
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    }
    // The files' names are in the directory for good once it is synced too.
    const dfd = openSync(kindDir, 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  }
  return counts;
}

/** The audit's sums carried forward for one ID: what its trimmed records held. */
export interface Carried {
  sold: number;
  sales: number;
  calls: number;
  redeemed: number;
  refunded: number;
  /** Top-ups credited (money in). */
  topups: number;
  /** A recharge voucher's value sent into other IDs (money out; a returned transfer counts negative). */
  vouchers: number;
  /** Value forfeited at expiry. */
  expired: number;
}

/** The checkpoint's sums, in the order lua/trim.lua writes them. */
export const SUMS = ['sold', 'sales', 'calls', 'redeemed', 'refunded', 'topups', 'vouchers', 'expired'] as const;

/** Sums of an ID with nothing carried yet. */
export const noneCarried = (): Carried => ({
  sold: 0,
  sales: 0,
  calls: 0,
  redeemed: 0,
  refunded: 0,
  topups: 0,
  vouchers: 0,
  expired: 0,
});

/** What a sale stream's record adds to, by its type, and from which field, as lua/trim.lua sums it. */
const SALES_SUMS = new Map<string, [keyof Carried, string]>([
  ['refund', ['refunded', 'amount']],
  ['topup', ['topups', 'amount']],
  ['voucher', ['vouchers', 'amount']],
  ['expiry', ['expired', 'amount']],
]);

/**
 * The sum a sale stream's record adds to and the field it adds: any type but those above is a sale,
 * its face to `sold` (and one to `sales`, which the caller counts).
 */
export const salesSumOf = (type: unknown): [keyof Carried, string] =>
  (typeof type === 'string' ? SALES_SUMS.get(type) : undefined) ?? ['sold', 'face'];

/** A bucket's checkpoint: ID hash -> the sums of its archived and trimmed records. */
export async function readCheckpoint(ctx: Context, key: string): Promise<Map<string, Carried>> {
  const out = new Map<string, Carried>();
  let cursor = '0';
  do {
    const [next, flat] = await ctx.redis.hscan(key, cursor, 'COUNT', 1000);
    cursor = next;
    for (let i = 0; i + 1 < flat.length; i += 2) {
      // Checkpoints written before top-ups existed hold five sums, before expiry records seven.
      const values = flat[i + 1]!.split(' ').map(Number);
      const c = noneCarried();
      SUMS.forEach((k, j) => (c[k] = values[j] ?? 0));
      out.set(flat[i]!, c);
    }
  } while (cursor !== '0');
  return out;
}
