import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, paymentSetup } from '../../src/config/config';
import { freePort } from '../../src/redis/embedded';
import { startHarness } from '../support/harness';
import { until } from '../support/wait';

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
      catalogPollMs: 1000,
      maxFrameBytes: 256 * 1024,
      maxBatch: 2000,
      maxInflight: 5_000,
      maxInflightPerToken: 25_000,
      maxInflightTotal: 50_000,
      offlineMaxAgeMs: 86_400_000,
      expirySweepMs: 3_600_000,
      maxConnections: 4_000,
      maxConnectionsPerClient: 1_000,
      maxConnectionsPerToken: 100,
      maxBackpressureBytes: 8 * 1024 * 1024,
      maxBackpressureTotalBytes: 256 * 1024 * 1024,
      wsIdleTimeoutSec: 120,
      publicUrl: undefined,
      hstsMaxAgeSec: 31_536_000,
      provider: { url: undefined, key: undefined, timeoutMs: 5000, sandboxPort: 0 },
      holdMs: 600_000,
      abandonAfterMs: 1_800_000,
      trustProxy: false,
      purchaseLeaseMs: 30_000,
      purchaseDeclinedTtlSec: 3600,
      buyLimit: { windowSec: 3600, perClient: 20, perNetwork: 100, total: 5000 },
      pin: { maxTries: 5, lockSec: 900, lockMaxSec: 86400, maxTriesPerClient: 20, maxTriesPerNetwork: 100 },
      pinMaxChecks: 64,
      scanTtlSec: 30 * 86400,
      guessLimit: 20,
      guessWindowSec: 60,
      switchGuessLimit: 1000,
      hooks: {
        concurrency: 16,
        perReceiver: 15,
        timeoutMs: 10_000,
        pollMs: 1000,
        claimIdleMs: 25_000,
        retryBaseMs: 30_000,
        retryMaxMs: 3_600_000,
        maxAttempts: 12,
        maxAgeMs: 86_400_000,
        expiringSweepMs: 3_600_000,
      },
    });
  });

  it('takes over pending webhook events only after twice the webhook timeout, unless told', () => {
    expect(loadConfig({ HOOK_TIMEOUT_MS: '2000' }).hooks.claimIdleMs).toBe(9000);
    expect(loadConfig({ HOOK_TIMEOUT_MS: '2000', HOOK_CLAIM_IDLE_MS: '60000' }).hooks.claimIdleMs).toBe(60_000);
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

  it('HSTS_MAX_AGE_SEC: a year unless set, 0 (not sent) to two years', () => {
    expect(loadConfig({ HSTS_MAX_AGE_SEC: '0' }).hstsMaxAgeSec).toBe(0);
    expect(loadConfig({ HSTS_MAX_AGE_SEC: '63072000' }).hstsMaxAgeSec).toBe(63_072_000);
    expect(() => loadConfig({ HSTS_MAX_AGE_SEC: '63072001' })).toThrow(/HSTS_MAX_AGE_SEC/);
    expect(() => loadConfig({ HSTS_MAX_AGE_SEC: '-1' })).toThrow(/HSTS_MAX_AGE_SEC/);
  });

  it("a token name may hold half the gateway's places in flight, unless set", () => {
    // A smaller gateway keeps the bound below its own: else one stolen token could take every place.
    expect(loadConfig({ MAX_INFLIGHT_TOTAL: '8000' }).maxInflightPerToken).toBe(4000);
    expect(loadConfig({ MAX_INFLIGHT_TOTAL: '200000' }).maxInflightPerToken).toBe(100_000);
    expect(loadConfig({ MAX_INFLIGHT_TOTAL: '1' }).maxInflightPerToken).toBe(1);
    expect(loadConfig({ MAX_INFLIGHT_TOTAL: '8000', MAX_INFLIGHT_PER_TOKEN: '6000' }).maxInflightPerToken).toBe(6000);
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

  it('offline scans: never older than a scan id is kept, so a journal sent again is not redeemed twice', () => {
    expect(loadConfig({ OFFLINE_MAX_AGE_MS: '3600000' }).offlineMaxAgeMs).toBe(3_600_000);
    // Unset, 24 h or the shorter scan memory; set, at most SCAN_TTL_SEC.
    expect(loadConfig({ SCAN_TTL_SEC: '600' }).offlineMaxAgeMs).toBe(600_000);
    expect(loadConfig({ SCAN_TTL_SEC: '600', OFFLINE_MAX_AGE_MS: '600000' }).offlineMaxAgeMs).toBe(600_000);
    expect(() => loadConfig({ SCAN_TTL_SEC: '600', OFFLINE_MAX_AGE_MS: '600001' })).toThrow(
      /OFFLINE_MAX_AGE_MS must not exceed SCAN_TTL_SEC/,
    );
    expect(() => loadConfig({ OFFLINE_MAX_AGE_MS: String(30 * 86_400_000 + 1) })).toThrow(/OFFLINE_MAX_AGE_MS/);
  });

  it('TRUST_PROXY: 0, 1 (any peer) or the proxies whose X-Forwarded-For is taken', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: '1' }).trustProxy).toBe(true);
    expect(loadConfig({ TRUST_PROXY: '10.0.0.5,2001:db8::/64' }).trustProxy).toEqual(['10.0.0.5', '2001:db8::/64']);
    for (const bad of ['yes', '10.0.0.256', '10.0.0.0/33', '2001:db8::/129', '10.0.0.1,'])
      expect(() => loadConfig({ TRUST_PROXY: bad }), bad).toThrow(/TRUST_PROXY/);
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

describe('which card company a start sells through', () => {
  const withProvider = loadConfig({ PROVIDER_URL: 'https://pay.example.com' });
  const without = loadConfig({});

  it('PROVIDER_URL set: that card company, with or without --sandbox, in production too', () => {
    expect(paymentSetup(withProvider, false, 'production')).toBe('provider');
    expect(paymentSetup(withProvider, true, undefined)).toBe('provider');
  });

  it('no PROVIDER_URL and no --sandbox: refused, naming PROVIDER_URL and --sandbox', () => {
    for (const env of [undefined, 'production', 'development'])
      expect(() => paymentSetup(without, false, env)).toThrow(
        new ConfigError(
          'no card company: set PROVIDER_URL (and PROVIDER_KEY) to sell IDs; ' +
            'the sandbox card company (test cards, no real money) runs only with --sandbox, as `npm start` does',
        ),
      );
  });

  it('--sandbox without PROVIDER_URL: the sandbox, but never with NODE_ENV=production', () => {
    expect(paymentSetup(without, true, undefined)).toBe('sandbox');
    expect(paymentSetup(without, true, 'development')).toBe('sandbox');
    expect(() => paymentSetup(without, true, 'production')).toThrow(/--sandbox with NODE_ENV=production/);
  });

  it('the gateway started as systemd runs it, without PROVIDER_URL, exits 2 with the message and starts nothing', async () => {
    const main = startMain([], { NODE_ENV: 'production' });
    expect(await main.exited).toBe(2);
    expect(main.output()).toContain('tessera: no card company: set PROVIDER_URL');
    expect(main.output()).not.toContain('sandbox card company runs beside the gateway');
  }, 30_000);

  it('--sandbox with NODE_ENV=production: exit 2, no sandbox', async () => {
    const main = startMain(['--sandbox'], { NODE_ENV: 'production' });
    expect(await main.exited).toBe(2);
    expect(main.output()).toContain('tessera: --sandbox with NODE_ENV=production');
    expect(main.output()).not.toContain('sandbox card company runs beside the gateway');
  }, 30_000);

  it('--sandbox (what npm start passes): the gateway starts with the sandbox card company beside it', async () => {
    const h = await startHarness();
    const dataDir = mkdtempSync(join(tmpdir(), 'tessera-sandbox-start-'));
    const port = await freePort();
    const main = startMain(['--sandbox'], {
      REDIS_URL: h.redis.url,
      BUCKETS: String(h.cfg.buckets),
      PORT: String(port),
      DATA_DIR: dataDir,
      LOG_LEVEL: 'info',
    });
    try {
      await until(() => main.output().includes('ready: switches connect here'), 20_000, 50, 'gateway ready');
      expect(main.output()).toContain('--sandbox: the sandbox card company runs beside the gateway');
      // The card company it uses is the sandbox it started: its URL is written for the CLI.
      const url = readFileSync(join(dataDir, 'provider.url'), 'utf8').trim();
      expect((await fetch(`${url}/v1/payments/probe`)).status).toBe(404);
    } finally {
      main.child.kill('SIGTERM');
      await main.exited;
      rmSync(dataDir, { recursive: true, force: true });
      await h.stop();
    }
  }, 40_000);
});

/** src/main.ts as its own process, with `env` over a test environment that has no card company. */
function startMain(
  args: string[],
  env: NodeJS.ProcessEnv,
): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const root = join(__dirname, '..', '..');
  const full: NodeJS.ProcessEnv = {
    ...process.env,
    // A Redis that is never reached unless the test gives its own: a refused start must stop before it.
    REDIS_URL: 'redis://127.0.0.1:9',
    TESSERA_SECRET: SECRET,
    PORT: '0',
    HOST: '127.0.0.1',
    ...env,
  };
  delete full.PROVIDER_URL;
  delete full.REDIS_CLUSTER;
  if (!('NODE_ENV' in env)) delete full.NODE_ENV;
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'main.ts'), ...args], {
    cwd: root,
    env: full,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', (c) => {
      clearTimeout(kill);
      resolve(c);
    });
  });
  return { child, output: () => out, exited };
}
