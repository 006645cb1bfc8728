/**
 * bench:switch's memory per live call: Redis used_memory and the gateway's RSS
 * read once before the first start and once while every call is live (started,
 * none stopped), the difference divided by the calls. Read between the two
 * instants, nothing but the live calls has changed: the IDs were sold before.
 */
import type { Context } from '../../src/app/context';
import { statusKb } from '../lib/cpu';
import { infoNumber, usedMemory } from '../lib/redis';

export interface MemoryReading {
  /** INFO used_memory and used_memory_rss, bytes. */
  redisUsed: number;
  redisRss: number;
  /** The gateway's VmRSS, bytes. */
  gwRss: number;
}

export interface LiveCallMemory {
  calls: number;
  before: MemoryReading;
  /** Unset when the calls were never all live at once (a start refused, or the first stop before the last start). */
  live?: MemoryReading;
  redisBytesPerCall?: number;
  redisRssBytesPerCall?: number;
  gwRssBytesPerCall?: number;
}

export async function readMemory(ctx: Context, gwPid: number | undefined): Promise<MemoryReading> {
  const [redisUsed, redisRss] = await Promise.all([
    usedMemory(ctx),
    infoNumber(ctx, 'memory', /^used_memory_rss:(\d+)/m),
  ]);
  return { redisUsed, redisRss, gwRss: statusKb(gwPid, 'VmRSS') * 1024 };
}

export function perLiveCall(calls: number, before: MemoryReading, live: MemoryReading | undefined): LiveCallMemory {
  if (!live) return { calls, before };
  const per = (k: keyof MemoryReading): number => Math.round((live[k] - before[k]) / calls);
  return {
    calls,
    before,
    live,
    redisBytesPerCall: per('redisUsed'),
    redisRssBytesPerCall: per('redisRss'),
    gwRssBytesPerCall: per('gwRss'),
  };
}
