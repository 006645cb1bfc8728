import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext } from '../../src/app/context';
import { ConfigError } from '../../src/config/config';
import { keys } from '../../src/redis/keys';
import { createLogger } from '../../src/observability/log';
import { startHarness, type Harness } from '../helpers/env';

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
