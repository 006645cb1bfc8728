import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config';

const SECRET = 'ab'.repeat(32);

describe('loadConfig', () => {
  it('defaults when nothing is set', () => {
    const c = loadConfig({});
    expect(c).toEqual({
      host: '0.0.0.0',
      port: 8080,
      logLevel: 'info',
      dataDir: 'var',
      redis: {
        url: undefined,
        cluster: undefined,
        username: undefined,
        password: undefined,
        embeddedPort: 0,
        timeoutMs: 2000,
        acks: { replicated: false, timeoutMs: 1000 },
      },
      secret: undefined,
      idLength: 16,
      buckets: 64,
      tickIntervalMs: 1000,
      staleAfterMs: 10_000,
      ringTimeoutMs: 180_000,
      reapIntervalMs: 5000,
      sessionTtlSec: 7 * 86400,
      catalogPollMs: 5000,
      maxFrameBytes: 256 * 1024,
      maxBatch: 2000,
      maxInflight: 5_000,
      maxInflightTotal: 50_000,
      maxConnections: 20_000,
      maxConnectionsPerClient: 1_000,
      maxBackpressureBytes: 8 * 1024 * 1024,
      wsIdleTimeoutSec: 120,
      publicUrl: undefined,
      provider: { url: undefined, key: undefined, timeoutMs: 5000, sandboxPort: 0 },
      holdMs: 600_000,
      abandonAfterMs: 1_800_000,
      trustProxy: false,
      purchaseLeaseMs: 30_000,
      pin: { maxTries: 5, lockSec: 900, maxTriesPerClient: 20 },
      scanTtlSec: 30 * 86400,
      guessLimit: 20,
      guessWindowSec: 60,
    });
  });

  it('an empty string counts as unset', () => {
    expect(loadConfig({ PORT: '', BUCKETS: '', LOG_LEVEL: '' })).toMatchObject({
      port: 8080,
      buckets: 64,
      logLevel: 'info',
    });
  });

  it('coerces numeric strings', () => {
    const c = loadConfig({
      PORT: '9090',
      BUCKETS: '128',
      ID_LENGTH: '20',
      TICK_INTERVAL_MS: '5000',
      MAX_FRAME_BYTES: '1024',
      MAX_BATCH: '5',
      MAX_INFLIGHT: '1',
      REDIS_TIMEOUT_MS: '750',
      LOG_LEVEL: 'debug',
      HOST: '127.0.0.1',
      DATA_DIR: '/tmp/x',
    });
    expect(c).toMatchObject({
      port: 9090,
      buckets: 128,
      idLength: 20,
      tickIntervalMs: 5000,
      maxFrameBytes: 1024,
      maxBatch: 5,
      maxInflight: 1,
      logLevel: 'debug',
      host: '127.0.0.1',
      dataDir: '/tmp/x',
    });
    expect(c.redis.timeoutMs).toBe(750);
    expect(typeof c.port).toBe('number');
  });

  it('stale-after is three tick intervals, at least 10 s, unless set', () => {
    expect(loadConfig({ TICK_INTERVAL_MS: '1000' }).staleAfterMs).toBe(10_000);
    expect(loadConfig({ TICK_INTERVAL_MS: '5000' }).staleAfterMs).toBe(15_000);
    expect(loadConfig({ TICK_INTERVAL_MS: '5000', STALE_AFTER_MS: '2500' }).staleAfterMs).toBe(2500);
  });

  it('parses the secret and the Redis settings', () => {
    const c = loadConfig({ TESSERA_SECRET: SECRET, REDIS_URL: 'redis://10.0.0.1:6380/2' });
    expect(c.secret).toEqual(Buffer.alloc(32, 0xab));
    expect(c.redis.url).toBe('redis://10.0.0.1:6380/2');
    const k = loadConfig({ REDIS_CLUSTER: 'r1:7000,10.0.0.2:7001' });
    expect(k.redis.cluster).toEqual([
      { host: 'r1', port: 7000 },
      { host: '10.0.0.2', port: 7001 },
    ]);
    expect(k.redis.url).toBeUndefined();
    const a = loadConfig({ REDIS_CLUSTER: 'r1:7000', REDIS_USERNAME: 'tessera', REDIS_PASSWORD: 's3cret' });
    expect(a.redis).toMatchObject({ username: 'tessera', password: 's3cret' });
  });

  it('cluster credentials only with REDIS_CLUSTER: with REDIS_URL they belong in the URL', () => {
    expect(() => loadConfig({ REDIS_URL: 'redis://h:6379', REDIS_PASSWORD: 'x' })).toThrow(
      /REDIS_USERNAME and REDIS_PASSWORD go with REDIS_CLUSTER/,
    );
    expect(() => loadConfig({ REDIS_USERNAME: 'u' })).toThrow(/put them in the URL/);
  });

  it('overrides win over the environment', () => {
    expect(loadConfig({ PORT: '9090' }, { port: 0, maxBatch: 3 })).toMatchObject({ port: 0, maxBatch: 3 });
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '80.5'],
    ['PORT', '-1'],
    ['BUCKETS', '0'],
    ['BUCKETS', '16385'],
    ['ID_LENGTH', '11'],
    ['LOG_LEVEL', 'loud'],
    ['TICK_INTERVAL_MS', '99'],
    ['MAX_BATCH', 'lots'],
    ['TESSERA_SECRET', 'abcd'],
    ['TESSERA_SECRET', 'zz'.repeat(32)],
    ['REDIS_URL', 'localhost:6379'],
    ['REDIS_CLUSTER', 'r1'],
  ])('%s=%s is refused with an error naming the variable', (name, value) => {
    let err: unknown;
    try {
      loadConfig({ [name]: value });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^invalid configuration: /);
    expect((err as Error).message).toContain(name);
  });

  it('replicated acknowledgements: on by default with REDIS_CLUSTER, off for one Redis, either way when set', () => {
    expect(loadConfig({ REDIS_CLUSTER: 'r1:7000' }).redis.acks).toEqual({ replicated: true, timeoutMs: 1000 });
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379' }).redis.acks.replicated).toBe(false);
    expect(loadConfig({ REDIS_CLUSTER: 'r1:7000', REDIS_REPLICATED_ACKS: 'off' }).redis.acks.replicated).toBe(false);
    expect(
      loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_REPLICATED_ACKS: 'on', REDIS_ACK_TIMEOUT_MS: '250' })
        .redis.acks,
    ).toEqual({ replicated: true, timeoutMs: 250 });
    // Within a short command timeout by default; never at or past it when set.
    expect(loadConfig({ REDIS_TIMEOUT_MS: '300' }).redis.acks.timeoutMs).toBe(150);
    expect(() => loadConfig({ REDIS_TIMEOUT_MS: '300', REDIS_ACK_TIMEOUT_MS: '300' })).toThrow(
      /REDIS_ACK_TIMEOUT_MS must be below REDIS_TIMEOUT_MS/,
    );
    expect(() => loadConfig({ REDIS_REPLICATED_ACKS: 'yes' })).toThrow(/REDIS_REPLICATED_ACKS/);
  });

  it('REDIS_URL and REDIS_CLUSTER together are refused', () => {
    expect(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_CLUSTER: 'r1:7000' })).toThrow(ConfigError);
    expect(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_CLUSTER: 'r1:7000' })).toThrow(
      /REDIS_URL or REDIS_CLUSTER, not both/,
    );
  });

  it('reads process.env by default', () => {
    const saved = process.env.MAX_BATCH;
    process.env.MAX_BATCH = '77';
    try {
      expect(loadConfig().maxBatch).toBe(77);
    } finally {
      if (saved === undefined) delete process.env.MAX_BATCH;
      else process.env.MAX_BATCH = saved;
    }
  });
});
