/**
 * The archive files against the checkpoints. The conservation audit counts
 * trimmed records through their IDs' checkpoint (ts:{bN}:ckpt), which
 * lua/trim.lua sums as `tessera archive` trims; nothing there says the files
 * still hold those records. This reads every file under the archive dir, one
 * bucket at a time, line by line, sums each ID's records exactly as trim.lua
 * does, and reports every ID whose sums differ from its checkpoint (a file
 * lost, cut, edited or copied from another system), every line that is no
 * record of its file's bucket, and a record that is not after the line
 * before it (archive writes each file in stream order, each record once).
 *
 * Records in a file at or after its stream's first remaining record are
 * still in Redis too (a run that stopped between its fsync and its trim,
 * src/ledger/retention.ts): no checkpoint holds them yet, so they are not
 * counted, but each must be in the stream as the file has it. A record that
 * adds nothing to any sum (a call that cost 0) of an ID with other archived
 * records can go missing unnoticed: the checkpoint does not count records.
 *
 * It holds the archive lock: a trim between its reads of a checkpoint, a
 * stream and a file would show as a difference.
 */
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Context } from '../app/context';
import { keys } from '../redis/keys';
import { decodeOf, exportRow, streamOf, type RecordKind } from './export';
import { readStream } from './records';
import {
  archiveFile,
  compareIds,
  KINDS,
  noneCarried,
  readCheckpoint,
  salesSumOf,
  SUMS,
  withArchiveLock,
  type Carried,
} from './retention';

export interface ArchiveProblem {
  /** The bucket of the checkpoint or the file (none for a file of a bucket this system does not have). */
  bucket?: number;
  /** An ID hash whose archived records do not add up to its checkpoint. */
  id?: string;
  /** The file at fault, under the archive dir (`<kind>/b<N>.ndjson`), and its line (from 1). */
  file?: string;
  line?: number;
  /** The ID's sums over its archived records, and its checkpoint's. */
  archived?: Carried;
  checkpoint?: Carried;
  problem: string;
}

export interface ArchiveReport {
  /** Archive files read. */
  files: number;
  /** Their records counted against the checkpoints. */
  records: number;
  /** Their records still in Redis too, not yet in a checkpoint: not counted. */
  inRedis: number;
  /** IDs with a checkpoint. */
  ids: number;
  problems: ArchiveProblem[];
}

const WHOLE = /^-?[0-9]+$/;
const RECORD = /^([0-9]+)\/([0-9]+-[0-9]+)$/;

interface Line {
  bucket: number;
  streamId: string;
  id: string;
  sum: keyof Carried;
  amount: number;
}

/** One archive line as lua/trim.lua reads its record, or why it is none. */
function readLine(kind: RecordKind, text: string): Line | string {
  let row: unknown;
  try {
    row = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof row !== 'object' || row === null || Array.isArray(row)) return 'not a JSON object';
  let f = row as Record<string, unknown>;
  const m = typeof f.record === 'string' ? RECORD.exec(f.record) : null;
  if (!m) return 'no `record` <bucket>/<stream id>';
  // Packed, as an earlier version archived an offline scan's record: trim.lua unpacks it so too.
  if (kind === 'redemptions' && typeof f.r === 'string') {
    const parts = f.r.split('|');
    f = { id: parts[3], amount: parts[10] };
  }
  const [sum, field]: [keyof Carried, string] =
    kind === 'calls' ? ['calls', 'cost'] : kind === 'redemptions' ? ['redeemed', 'amount'] : salesSumOf(f.type);
  if (typeof f.id !== 'string' || f.id === '') return 'no `id`';
  const v = f[field];
  if (typeof v !== 'string' || !WHOLE.test(v)) return `\`${field}\` is no whole number`;
  return { bucket: Number(m[1]), streamId: m[2]!, id: f.id, sum, amount: Number(v) };
}

/** A file's lines, numbered from 1, streamed; `whole` is false for a last line with no newline. */
async function* linesOf(path: string): AsyncGenerator<{ n: number; text: string; whole: boolean }> {
  let rest = '';
  let n = 0;
  for await (const chunk of createReadStream(path, { encoding: 'utf8' }) as AsyncIterable<string>) {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop()!;
    for (const text of parts) yield { n: ++n, text, whole: true };
  }
  if (rest !== '') yield { n: n + 1, text: rest, whole: false };
}

/** Reads every archive file under `dir` against the checkpoints. Throws ArchiveRunning while a run is at work. */
export async function checkArchive(ctx: Context, dir: string): Promise<ArchiveReport> {
  if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`no archive directory at ${dir}`);
  const report: ArchiveReport = { files: 0, records: 0, inRedis: 0, ids: 0, problems: [] };
  const ours = new Set(Array.from({ length: ctx.cfg.buckets }, (_, b) => `b${b}.ndjson`));
  for (const kind of KINDS) {
    if (!existsSync(join(dir, kind))) continue;
    for (const name of readdirSync(join(dir, kind)))
      if (name.endsWith('.ndjson') && !ours.has(name))
        report.problems.push({ file: `${kind}/${name}`, problem: `no bucket of ${ctx.cfg.buckets} has this file` });
  }
  return withArchiveLock(ctx, async (hold) => {
    for (let b = 0; b < ctx.cfg.buckets; b++) {
      await hold();
      const ckpt = await readCheckpoint(ctx, keys.checkpoint(b));
      report.ids += ckpt.size;
      const sums = new Map<string, Carried>();
      for (const kind of KINDS) await checkFile(ctx, dir, kind, b, sums, report, hold);
      for (const id of new Set([...ckpt.keys(), ...sums.keys()])) {
        const archived = sums.get(id);
        const checkpoint = ckpt.get(id);
        if (archived && checkpoint && SUMS.every((k) => archived[k] === checkpoint[k])) continue;
        report.problems.push({
          bucket: b,
          id,
          archived: archived ?? noneCarried(),
          checkpoint: checkpoint ?? noneCarried(),
          problem: !archived
            ? 'checkpointed, but no record of it archived'
            : !checkpoint
              ? 'archived, but in no checkpoint'
              : 'its archived records do not add up to its checkpoint',
        });
      }
    }
    return report;
  });
}

async function checkFile(
  ctx: Context,
  dir: string,
  kind: RecordKind,
  b: number,
  sums: Map<string, Carried>,
  report: ArchiveReport,
  hold: () => Promise<void>,
): Promise<void> {
  const path = archiveFile(dir, kind, b);
  if (!existsSync(path)) return;
  report.files++;
  const file = `${kind}/b${b}.ndjson`;
  const at = (line: number, problem: string): void => void report.problems.push({ bucket: b, file, line, problem });
  const stream = streamOf[kind](b);
  const [first] = (await ctx.redis.xrange(stream, '-', '+', 'COUNT', 1))[0] ?? [];
  // The file's records that are still in the stream, by stream id: to be found there as written.
  const inRedis = new Map<string, { line: number; text: string }>();
  let last: string | undefined;
  for await (const { n, text, whole } of linesOf(path)) {
    if (n % 10_000 === 0) await hold();
    // Half a line that a crash left: the next run cuts it off, and its record is still in Redis. A record cut
    // out of the file so, or lost any other way, shows in its ID's sums.
    if (!whole) break;
    const r = readLine(kind, text);
    if (typeof r === 'string') {
      at(n, `not a record: ${r}`);
      continue;
    }
    const name = `${r.bucket}/${r.streamId}`;
    if (r.bucket !== b) {
      at(n, `record ${name} is of another bucket`);
      continue;
    }
    const order = last === undefined ? 1 : compareIds(r.streamId, last);
    if (order === 0) at(n, `record ${name} twice`);
    else if (order < 0) at(n, `record ${name} out of order, after ${b}/${last!} (a record twice, or lines moved)`);
    else last = r.streamId;
    if (first !== undefined && compareIds(r.streamId, first) >= 0) {
      inRedis.set(r.streamId, { line: n, text });
      continue;
    }
    report.records++;
    let s = sums.get(r.id);
    if (!s) sums.set(r.id, (s = noneCarried()));
    s[r.sum] += r.amount;
    if (r.sum === 'sold') s.sales++;
  }
  if (inRedis.size === 0) return;
  for await (const { id, fields } of readStream(ctx, stream, first, last, decodeOf[kind])) {
    const f = inRedis.get(id);
    if (!f) continue;
    inRedis.delete(id);
    if (f.text === JSON.stringify(exportRow(b, id, fields))) report.inRedis++;
    else at(f.line, `record ${b}/${id} is not as Redis holds it`);
  }
  for (const [id, f] of inRedis) at(f.line, `record ${b}/${id} is in neither Redis nor the checkpoint`);
}
