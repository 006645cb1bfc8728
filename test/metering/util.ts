import { randomBytes } from 'node:crypto';
import { Client, token, type Harness, type Msg } from '../helpers/env';
import { keys } from '../../src/redis/keys';

/** Shared pieces of the metering tests: key lookups, CDR reads, tick frames. */

export const newCall = (tag = 'c'): string => `${tag}-${randomBytes(6).toString('hex')}`;

export function idKeyOf(h: Harness, id: string): string {
  const { hash, bucket } = h.ctx.ids.hash(id);
  return keys.id(bucket, hash);
}

export const bucketOf = (h: Harness, id: string): number => h.ctx.ids.hash(id).bucket;

/** The ID's fields in Redis (st, bal, act, exp, first, ...). */
export function idFields(h: Harness, id: string): Promise<Record<string, string>> {
  return h.r.hgetall(idKeyOf(h, id));
}

export async function balanceOf(h: Harness, id: string): Promise<string | null> {
  return h.r.hget(idKeyOf(h, id), 'bal');
}

export function sessionKey(h: Harness, id: string, switchName: string, call: string): string {
  return keys.call(bucketOf(h, id), `${switchName}:${call}`);
}

/** Every call detail record of one call, read from its ID's bucket stream. */
export async function cdrsOf(h: Harness, id: string, call: string): Promise<Record<string, string>[]> {
  const rows = await h.r.xrange(keys.cdr(bucketOf(h, id)), '-', '+');
  const out: Record<string, string>[] = [];
  for (const [, flat] of rows) {
    const rec: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) rec[flat[i]!] = flat[i + 1]!;
    if (rec.call === call) out.push(rec);
  }
  return out;
}

/** Messages for a call of a given op, in arrival order. */
export const msgs = (c: Client, call: string, op: string): Msg[] => c.received.filter((m) => m.call === call && m.op === op);

/** Sends ticks for secs as array frames of `per` messages each; the very last tick carries `ref` when given. */
export function sendTicks(c: Client, call: string, secs: number[], per = 100, lastRef?: string | number): void {
  for (let i = 0; i < secs.length; i += per) {
    const frame: Msg[] = secs.slice(i, i + per).map((sec) => ({ op: 'tick', call, sec }));
    if (lastRef !== undefined && i + per >= secs.length) frame[frame.length - 1]!.ref = lastRef;
    c.send(frame);
  }
}

export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until fn returns true (or throws after timeoutMs). */
export async function until(fn: () => Promise<boolean>, timeoutMs = 5000, stepMs = 25): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(stepMs);
  }
}

/** A switch connection with a token of a known (unique) name: calls live under that name. */
export async function connectSwitch(h: Harness, port: number, opts: { binary?: boolean } = {}): Promise<{ c: Client; name: string }> {
  const name = `sw-${randomBytes(4).toString('hex')}`;
  const c = await Client.connect(port, await token(h, 'switch', name), opts);
  return { c, name };
}
