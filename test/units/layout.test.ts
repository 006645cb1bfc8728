import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext } from '../../src/app/context';
import { ConfigError } from '../../src/config/config';
import { keys } from '../../src/redis/keys';
import { createLogger } from '../../src/observability/log';
import { startEmbeddedRedis } from '../../src/redis/embedded';
import { startHarness, type Harness } from '../support/harness';

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => h?.stop());

const open = (over: Partial<Harness['cfg']>) => openContext({ ...h.cfg, ...over }, createLogger('silent'), h.redis.url);

describe('the data layout is pinned in Redis by the first process', () => {
  it('records buckets, ID length and a fingerprint of the secret, not the secret', async () => {
    const pinned = JSON.parse((await h.r.get(keys.layout))!);
    expect(pinned).toMatchObject({ buckets: h.cfg.buckets, idLength: h.cfg.idLength });
    expect(pinned.secret).toMatch(/^[0-9a-f]{16}$/);
    expect(JSON.stringify(pinned)).not.toContain(h.cfg.secret!.toString('hex').slice(0, 16));
  });

  it('a process with the same settings opens it', async () => {
    const ctx = await open({});
    await ctx.close();
  });

  it.each([
    ['BUCKETS', { buckets: 1024 }, /BUCKETS=1024, but this Redis holds data laid out in 64 buckets: set BUCKETS=64/],
    ['ID_LENGTH', { idLength: 20 }, /ID_LENGTH=20, .* set ID_LENGTH=16/],
    ['TESSERA_SECRET', { secret: Buffer.alloc(32, 7) }, /TESSERA_SECRET differs/],
  ])('another %s is refused with a ConfigError that names it', async (_, over, message) => {
    const err = await open(over).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
    // Nothing was overwritten: the right settings still open it.
    expect(JSON.parse((await h.r.get(keys.layout))!).buckets).toBe(64);
  });
});

describe('data from before the pin', () => {
  it('IDs in buckets past BUCKETS (laid out with the old default of 1024) are refused, and nothing is pinned', async () => {
    const old = await startEmbeddedRedis({ dir: `${h.dir}/old-redis`, persist: false });
    try {
      const r = new Redis(old.url);
      await r.hset('ts:{b700}:id:0123456789abcdef0123456789abcdef', 'st', 'sold', 'bal', '1000');
      const err = await openContext(
        { ...h.cfg, redis: { ...h.cfg.redis, url: old.url } },
        createLogger('silent'),
        old.url,
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/holds IDs in bucket 700: it was laid out with more buckets/);
      expect(await r.get(keys.layout)).toBeNull();
      r.disconnect();
    } finally {
      await old.stop();
    }
  });
});
