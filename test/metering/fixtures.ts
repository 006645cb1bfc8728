/** Metering test fixtures: call ids, call keys, CDR reads, tick frames, a switch of a known name. */
import type { CatalogCache } from '../../src/catalog/cache';
import { callKeyOf, callKeysFor, type CallKeys } from '../../src/metering/call-keys';
import { callStart, callTick, type StartResult, type TickCallback, type TickResult } from '../../src/metering/scripts';
import { keys } from '../../src/redis/keys';
import { token, uniq, type Harness } from '../support/harness';
import { bucketOf, hashOf, idKeyOf, streamFields } from '../support/redis';
import { Client, type Msg } from '../support/ws-client';

export const newCall = (tag = 'c'): string => uniq(tag);

export function sessionKey(h: Harness, id: string, switchName: string, call: string): string {
  return keys.call(bucketOf(h, id), `${switchName}:${call}`);
}

/** The key of a call's index (its call id's claim) under switch token name `switchName`. */
export function callIndexKey(h: Harness, switchName: string, call: string): string {
  const callKey = callKeyOf(switchName, call);
  return keys.callIndex(h.ctx.ids.bucketOf(callKey), callKey);
}

/** Every call detail record of one call, read from its ID's bucket stream. */
export async function cdrsOf(h: Harness, id: string, call: string): Promise<Record<string, string>[]> {
  const rows = await h.r.xrange(keys.cdr(bucketOf(h, id)), '-', '+');
  return rows.map(([, flat]) => streamFields(flat)).filter((rec) => rec.call === call);
}

/** Messages for a call of a given op, in arrival order. */
export const msgs = (c: Client, call: string, op: string): Msg[] =>
  c.received.filter((m) => m.call === call && m.op === op);

/** Sends ticks for secs as array frames of `per` messages each; the very last tick carries `ref` when given. */
export function sendTicks(c: Client, call: string, secs: number[], per = 100, lastRef?: string | number): void {
  for (let i = 0; i < secs.length; i += per) {
    const frame: Msg[] = secs.slice(i, i + per).map((sec) => ({ op: 'tick', call, sec }));
    if (lastRef !== undefined && i + per >= secs.length) frame[frame.length - 1]!.ref = lastRef;
    c.send(frame);
  }
}

export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A switch connection with a token of a known (unique) name: calls live under that name. */
export async function connectSwitch(
  h: Harness,
  port: number,
  opts: { binary?: boolean } = {},
): Promise<{ c: Client; name: string }> {
  const name = uniq('sw', 4);
  const c = await Client.connect(port, await token(h, 'switch', name), opts);
  return { c, name };
}

/** One tick straight through call_tick at `now` (a chosen time); `refreshMs` as the gateway's. */
export function tickAt(h: Harness, ck: CallKeys, sec: number, now: number, refreshMs = 60_000): Promise<TickResult> {
  return new Promise((resolve, reject) => {
    const done: TickCallback = (err, r) => (err ? reject(new Error('call_tick', { cause: err })) : resolve(r!));
    callTick(h.ctx.scripts, [{ ck, sec, heard: true, done }], now, refreshMs, () => {});
  });
}

/** One start straight through call_start, sent at `now` (a chosen time: a start held back on its way). */
export function startAt(
  h: Harness,
  catalog: CatalogCache,
  c: { id: string; sw: string; call: string; dest: string },
  now: number,
): Promise<StartResult> {
  const ck = callKeysFor(idKeyOf(h, c.id), callKeyOf(c.sw, c.call));
  const { dest, sw, call } = c;
  const rates = catalog.tariffArgs(dest, now);
  return callStart(h.ctx.scripts, ck, {
    dest,
    sw,
    call,
    idHash: hashOf(h, c.id),
    mode: 'tick',
    aniHash: '',
    rates,
    now,
    ringGraceMs: 180_000,
  });
}
