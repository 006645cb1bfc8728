/**
 * Every setting comes from the environment, has a default where one is safe,
 * and is validated once at start: a bad value stops the process with a message
 * that names the variable, rather than surfacing later as odd behaviour.
 */
import { Type, type Static } from '@sinclair/typebox';
import Ajv from 'ajv';
import { isIP } from 'node:net';

const Int = (min: number, max: number, def: number) => Type.Integer({ minimum: min, maximum: max, default: def });

const EnvSchema = Type.Object({
  HOST: Type.String({ default: '0.0.0.0', minLength: 1 }),
  PORT: Int(0, 65535, 8080),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info' },
  ),
  DATA_DIR: Type.String({ default: 'var', minLength: 1 }),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  REDIS_CLUSTER: Type.Optional(Type.String({ pattern: '^[^,:\\s]+:\\d+(,[^,:\\s]+:\\d+)*$' })),
  REDIS_USERNAME: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  REDIS_PASSWORD: Type.Optional(Type.String({ minLength: 1, maxLength: 1000 })),
  REDIS_PORT: Int(0, 65535, 0),
  TESSERA_SECRET: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64,}$' })),
  ID_LENGTH: Int(12, 24, 16),
  BUCKETS: Int(1, 16384, 64),
  TICK_INTERVAL_MS: Int(100, 60_000, 1000),
  STALE_AFTER_MS: Int(0, 3_600_000, 0),
  RING_TIMEOUT_MS: Int(0, 3_600_000, 180_000),
  REAP_INTERVAL_MS: Int(100, 600_000, 5000),
  SESSION_TTL_SEC: Int(60, 90 * 86400, 7 * 86400),
  CATALOG_POLL_MS: Int(100, 600_000, 1000),
  MAX_FRAME_BYTES: Int(64, 16 * 1024 * 1024, 256 * 1024),
  MAX_BATCH: Int(1, 100_000, 2000),
  MAX_INFLIGHT: Int(1, 1_000_000, 5_000),
  MAX_INFLIGHT_TOTAL: Int(1, 10_000_000, 50_000),
  // Unset: half of MAX_INFLIGHT_TOTAL, whatever that is set to (loadConfig).
  MAX_INFLIGHT_PER_TOKEN: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000_000 })),
  MAX_CONNECTIONS: Int(1, 1_000_000, 4_000),
  MAX_CONNECTIONS_PER_CLIENT: Int(1, 1_000_000, 1_000),
  MAX_CONNECTIONS_PER_TOKEN: Int(1, 1_000_000, 100),
  MAX_BACKPRESSURE_BYTES: Int(1024, 1 << 30, 8 * 1024 * 1024),
  MAX_BACKPRESSURE_TOTAL_BYTES: Int(1 << 20, 64 * 2 ** 30, 256 * 1024 * 1024),
  WS_IDLE_TIMEOUT_SEC: Int(0, 960, 120),
  REDIS_TIMEOUT_MS: Int(50, 60_000, 2000),
  REDIS_REPLICATED_ACKS: Type.Optional(Type.Union([Type.Literal('on'), Type.Literal('off')])),
  REDIS_ACK_TIMEOUT_MS: Type.Optional(Type.Integer({ minimum: 10, maximum: 60_000 })),
  PUBLIC_URL: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
  HSTS_MAX_AGE_SEC: Int(0, 2 * 365 * 86400, 365 * 86400),
  PROVIDER_URL: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
  PROVIDER_KEY: Type.Optional(Type.String({ maxLength: 200 })),
  PROVIDER_TIMEOUT_MS: Int(50, 120_000, 5000),
  SANDBOX_PORT: Int(0, 65535, 0),
  HOLD_MS: Int(1000, 3_600_000, 600_000),
  ABANDON_AFTER_MS: Int(1000, 7 * 86_400_000, 1_800_000),
  PURCHASE_LEASE_MS: Int(100, 600_000, 30_000),
  PURCHASE_DECLINED_TTL_SEC: Int(60, 30 * 86400, 3600),
  BUY_LIMIT_WINDOW_SEC: Int(1, 86400, 3600),
  BUY_LIMIT_PER_CLIENT: Int(1, 1_000_000, 20),
  BUY_LIMIT_PER_NETWORK: Int(1, 10_000_000, 100),
  BUY_LIMIT_TOTAL: Int(1, 10_000_000, 5000),
  PIN_MAX_TRIES: Int(1, 100, 5),
  // 0, 1 (any peer), or the proxies' addresses and networks: 10.0.0.5,2001:db8::/64
  TRUST_PROXY: Type.String({
    default: '0',
    pattern: '^(0|1|[0-9a-fA-F:.]+(/[0-9]{1,3})?(,[0-9a-fA-F:.]+(/[0-9]{1,3})?)*)$',
  }),
  METRICS_TOKEN: Type.Optional(Type.String({ pattern: '^[\\x21-\\x7e]{16,200}$' })),
  PIN_LOCK_SEC: Int(1, 86400, 900),
  PIN_LOCK_MAX_SEC: Int(1, 30 * 86400, 86400),
  PIN_MAX_TRIES_PER_CLIENT: Int(1, 100_000, 20),
  PIN_MAX_TRIES_PER_NETWORK: Int(1, 10_000_000, 100),
  PIN_MAX_CHECKS: Int(1, 100_000, 64),
  SCAN_TTL_SEC: Int(60, 366 * 86400, 30 * 86400),
  // Unset: 24 h, or SCAN_TTL_SEC when that is shorter (below).
  OFFLINE_MAX_AGE_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 30 * 86_400_000 })),
  GUESS_LIMIT: Int(1, 1_000_000, 20),
  GUESS_WINDOW_SEC: Int(1, 86400, 60),
  SWITCH_GUESS_LIMIT: Int(1, 1_000_000_000, 1000),
  HOOK_CONCURRENCY: Int(1, 1000, 16),
  // 0: HOOK_CONCURRENCY - 1 (below).
  HOOK_RECEIVER_CONCURRENCY: Int(0, 1000, 0),
  HOOK_TIMEOUT_MS: Int(100, 120_000, 10_000),
  HOOK_POLL_MS: Int(10, 60_000, 1000),
  HOOK_CLAIM_IDLE_MS: Int(0, 3_600_000, 0),
  HOOK_RETRY_BASE_MS: Int(10, 3_600_000, 30_000),
  HOOK_RETRY_MAX_MS: Int(10, 86_400_000, 3_600_000),
  HOOK_MAX_ATTEMPTS: Int(1, 1000, 12),
  HOOK_MAX_AGE_MS: Int(1000, 30 * 86_400_000, 86_400_000),
  EXPIRING_SWEEP_MS: Int(1000, 7 * 86_400_000, 3_600_000),
  EXPIRY_SWEEP_MS: Int(1000, 7 * 86_400_000, 3_600_000),
});
type Env = Static<typeof EnvSchema>;

export interface HookSettings {
  /** Webhook POSTs one gateway has in flight at most. */
  concurrency: number;
  /** Of those, POSTs to one webhook URL at most (a cap: the slots are shared out by who has work). */
  perReceiver: number;
  /** A receiver that has not answered in this long has failed the attempt. */
  timeoutMs: number;
  /** How often each bucket's events stream is read for new events. */
  pollMs: number;
  /** An event pending this long at one gateway (dead, or waiting to retry) is taken over by another. */
  claimIdleMs: number;
  /** Wait before the n-th retry: retryBaseMs * 2^(n-1), at most retryMaxMs. */
  retryBaseMs: number;
  retryMaxMs: number;
  /** After this many failed attempts, or when the event is this old, it is parked as failed. */
  maxAttempts: number;
  maxAgeMs: number;
  /** How often each gateway looks for IDs to send `expiring` for. */
  expiringSweepMs: number;
}

export interface Config {
  host: string;
  port: number;
  logLevel: string;
  dataDir: string;
  redis: {
    url?: string;
    cluster?: { host: string; port: number }[];
    /** Credentials of the cluster's nodes (with REDIS_URL they go in the URL). */
    username?: string;
    password?: string;
    embeddedPort: number;
    timeoutMs: number;
    /**
     * Replicated acknowledgements: the writes whose loss costs money are answered
     * only once a replica has them (WAIT), or `unavailable` after timeoutMs.
     */
    acks: { replicated: boolean; timeoutMs: number };
  };
  /** 32+ bytes of key material; undefined means "derive or create a dev secret under dataDir". */
  secret?: Buffer;
  idLength: number;
  buckets: number;
  tickIntervalMs: number;
  staleAfterMs: number;
  /** How long a call may ring (no tick yet) before the reaper closes it. */
  ringTimeoutMs: number;
  reapIntervalMs: number;
  sessionTtlSec: number;
  catalogPollMs: number;
  maxFrameBytes: number;
  maxBatch: number;
  maxInflight: number;
  /**
   * WebSocket requests in flight of one token name, all its connections together: one stolen
   * token may not take every place of maxInflightTotal. Half of it by default: a Kamailio's two
   * connectors share a token and both send every request.
   */
  maxInflightPerToken: number;
  /**
   * WebSocket connections one gateway holds, from one client address (an IPv6 client by
   * its /64) and of one token name; past them an upgrade is refused 503.
   */
  maxConnections: number;
  maxConnectionsPerClient: number;
  maxConnectionsPerToken: number;
  /** Requests in flight in the whole gateway before new ones are refused `overloaded`. */
  maxInflightTotal: number;
  maxBackpressureBytes: number;
  /** Unsent output WebSocket connections and HTTP answers together may hold; past it the largest holders are closed. */
  maxBackpressureTotalBytes: number;
  wsIdleTimeoutSec: number;
  /** Where buyers reach us: check and access-number links are built on it. */
  publicUrl?: string;
  /** How long browsers come back to an https PUBLIC_URL over https only (Strict-Transport-Security); 0: not sent. */
  hstsMaxAgeSec: number;
  /** The card company; unset: the gateway refuses to start unless the sandbox is asked for (`--sandbox`). */
  provider: { url?: string; key?: string; timeoutMs: number; sandboxPort: number };
  /** How long an ID stays reserved for a purchase in progress. */
  holdMs: number;
  /** How long a buyer has to retry an unfinished purchase before its payment is voided. */
  abandonAfterMs: number;
  /**
   * Whose X-Forwarded-For names the client (only behind a proxy that sets it): nobody's (false),
   * any peer's (true: safe only where nothing but the proxy reaches the gateway), or only that of
   * the proxies listed (addresses and networks). The gateway reads it through proxyTrust.
   */
  trustProxy: boolean | string[];
  /** Bearer token GET /metrics asks for; unset, it answers loopback clients only. */
  metricsToken: string | undefined;
  purchaseLeaseMs: number;
  /** How long a declined purchase's answer is kept for retries with its key. */
  purchaseDeclinedTtlSec: number;
  /**
   * Purchases anonymous buyers (the buy page) may start per window: from one
   * client address, and from all of them together. Retries of a purchase already
   * started are not counted.
   */
  buyLimit: { windowSec: number; perClient: number; perNetwork: number; total: number };
  /**
   * Wrong PINs before a check link locks, for how long (the first lock; each further
   * lock doubles it, up to lockMaxSec), and per client address.
   */
  pin: { maxTries: number; lockSec: number; lockMaxSec: number; maxTriesPerClient: number; maxTriesPerNetwork: number };
  /**
   * Check-link PIN tries one gateway works on at once (each a scrypt on the thread pool every check
   * and sale shares); past it a try is refused `overloaded`, nothing counted.
   */
  pinMaxChecks: number;
  /** Webhook delivery of balance events (docs/operations.md, Webhooks). */
  hooks: HookSettings;
  /** How long a scan's first answer is kept for retries and reversal. */
  scanTtlSec: number;
  /** How long ago an offline scan (a redeem with `at`) may have been made; older ones are refused bad_scan_time. */
  offlineMaxAgeMs: number;
  /**
   * How often each gateway looks for IDs past their expiry to forfeit what they have left
   * (src/ledger/expiry-sweep.ts); goods, entry and service IDs offlineMaxAgeMs after it.
   */
  expirySweepMs: number;
  /** unknown_id answers one scanner may get per window before it is throttled. */
  guessLimit: number;
  guessWindowSec: number;
  /** unknown_id answers to one switch's starts and quotes that carry an origin, all origins together, per window. */
  switchGuessLimit: number;
}

// Its own Ajv, not the wire's: the environment's strings become numbers, defaults fill in, every error is told.
const checkEnv = new Ajv({ coerceTypes: true, useDefaults: true, allErrors: true, strict: false }).compile<Env>(
  EnvSchema,
);

/** `PORT must be <= 65535; ...`: the variable named as it is set. */
function describeErrors(errors: typeof checkEnv.errors): string {
  return (
    (errors ?? [])
      .map(
        (e) =>
          `${e.instancePath.slice(1) || (e.params as { missingProperty?: string }).missingProperty || 'value'} ${e.message ?? 'is invalid'}`,
      )
      .join('; ') || 'invalid'
  );
}

/** `192.0.2.7`, `10.0.0.0/8`, `2001:db8::/64`: an address, or a network with a prefix its family allows. */
function isNetwork(text: string): boolean {
  const [address = '', prefix] = text.split('/');
  const family = isIP(address);
  return family !== 0 && (prefix === undefined || Number(prefix) <= (family === 4 ? 32 : 128));
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const v = env[key];
    if (v !== undefined && v !== '') raw[key] = v;
  }
  // ajv is configured with coerceTypes, so "8080" becomes 8080 and defaults fill in.
  if (!checkEnv(raw)) throw new ConfigError(`invalid configuration: ${describeErrors(checkEnv.errors)}`);
  const e = raw;
  if (e.REDIS_URL && e.REDIS_CLUSTER)
    throw new ConfigError('invalid configuration: set REDIS_URL or REDIS_CLUSTER, not both');
  // One place for credentials: a second that could disagree with the URL's would be a trap.
  // A WAIT that outlived the command timeout would be cut off as a timeout, not answered as one.
  if (e.REDIS_ACK_TIMEOUT_MS !== undefined && e.REDIS_ACK_TIMEOUT_MS >= e.REDIS_TIMEOUT_MS)
    throw new ConfigError('invalid configuration: REDIS_ACK_TIMEOUT_MS must be below REDIS_TIMEOUT_MS');
  // An offline scan sent again once its scan id is forgotten would be a second redemption: its `at`
  // must be out of bounds by then, and a scan id is kept SCAN_TTL_SEC at least.
  if (e.OFFLINE_MAX_AGE_MS !== undefined && e.OFFLINE_MAX_AGE_MS > e.SCAN_TTL_SEC * 1000)
    throw new ConfigError('invalid configuration: OFFLINE_MAX_AGE_MS must not exceed SCAN_TTL_SEC');
  if ((e.REDIS_PASSWORD || e.REDIS_USERNAME) && !e.REDIS_CLUSTER)
    throw new ConfigError(
      'invalid configuration: REDIS_USERNAME and REDIS_PASSWORD go with REDIS_CLUSTER; with REDIS_URL put them in the URL (redis://user:password@host:port)',
    );
  const proxies = e.TRUST_PROXY === '0' || e.TRUST_PROXY === '1' ? undefined : e.TRUST_PROXY.split(',');
  const notProxy = proxies?.find((p) => !isNetwork(p));
  if (notProxy !== undefined)
    throw new ConfigError(`invalid configuration: TRUST_PROXY: ${notProxy} is no IPv4 or IPv6 address or network`);
  const cfg: Config = {
    host: e.HOST,
    port: e.PORT,
    logLevel: e.LOG_LEVEL,
    dataDir: e.DATA_DIR,
    redis: {
      url: e.REDIS_URL,
      cluster: e.REDIS_CLUSTER?.split(',').map((hp) => {
        const i = hp.lastIndexOf(':');
        return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
      }),
      username: e.REDIS_USERNAME,
      password: e.REDIS_PASSWORD,
      embeddedPort: e.REDIS_PORT,
      timeoutMs: e.REDIS_TIMEOUT_MS,
      acks: {
        // On by default where there are replicas to wait for: a Redis Cluster.
        replicated: (e.REDIS_REPLICATED_ACKS ?? (e.REDIS_CLUSTER ? 'on' : 'off')) === 'on',
        timeoutMs: e.REDIS_ACK_TIMEOUT_MS ?? Math.min(1000, Math.floor(e.REDIS_TIMEOUT_MS / 2)),
      },
    },
    secret: e.TESSERA_SECRET ? Buffer.from(e.TESSERA_SECRET, 'hex') : undefined,
    idLength: e.ID_LENGTH,
    buckets: e.BUCKETS,
    tickIntervalMs: e.TICK_INTERVAL_MS,
    // A call is stale after three missed ticks, but never sooner than 10 s: switches batch and jitter.
    staleAfterMs: e.STALE_AFTER_MS || Math.max(3 * e.TICK_INTERVAL_MS, 10_000),
    ringTimeoutMs: e.RING_TIMEOUT_MS,
    reapIntervalMs: e.REAP_INTERVAL_MS,
    sessionTtlSec: e.SESSION_TTL_SEC,
    catalogPollMs: e.CATALOG_POLL_MS,
    maxFrameBytes: e.MAX_FRAME_BYTES,
    maxBatch: e.MAX_BATCH,
    maxInflight: e.MAX_INFLIGHT,
    maxInflightTotal: e.MAX_INFLIGHT_TOTAL,
    maxInflightPerToken: e.MAX_INFLIGHT_PER_TOKEN ?? Math.max(1, Math.floor(e.MAX_INFLIGHT_TOTAL / 2)),
    maxConnections: e.MAX_CONNECTIONS,
    maxConnectionsPerClient: e.MAX_CONNECTIONS_PER_CLIENT,
    maxConnectionsPerToken: e.MAX_CONNECTIONS_PER_TOKEN,
    maxBackpressureBytes: e.MAX_BACKPRESSURE_BYTES,
    maxBackpressureTotalBytes: e.MAX_BACKPRESSURE_TOTAL_BYTES,
    wsIdleTimeoutSec: e.WS_IDLE_TIMEOUT_SEC,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    hstsMaxAgeSec: e.HSTS_MAX_AGE_SEC,
    provider: {
      url: e.PROVIDER_URL,
      key: e.PROVIDER_KEY,
      timeoutMs: e.PROVIDER_TIMEOUT_MS,
      sandboxPort: e.SANDBOX_PORT,
    },
    holdMs: e.HOLD_MS,
    abandonAfterMs: e.ABANDON_AFTER_MS,
    trustProxy: proxies ?? e.TRUST_PROXY === '1',
    metricsToken: e.METRICS_TOKEN,
    purchaseLeaseMs: e.PURCHASE_LEASE_MS,
    purchaseDeclinedTtlSec: e.PURCHASE_DECLINED_TTL_SEC,
    buyLimit: {
      windowSec: e.BUY_LIMIT_WINDOW_SEC,
      perClient: e.BUY_LIMIT_PER_CLIENT,
      perNetwork: e.BUY_LIMIT_PER_NETWORK,
      total: e.BUY_LIMIT_TOTAL,
    },
    pin: {
      maxTries: e.PIN_MAX_TRIES,
      lockSec: e.PIN_LOCK_SEC,
      lockMaxSec: Math.max(e.PIN_LOCK_MAX_SEC, e.PIN_LOCK_SEC),
      maxTriesPerClient: e.PIN_MAX_TRIES_PER_CLIENT,
      maxTriesPerNetwork: e.PIN_MAX_TRIES_PER_NETWORK,
    },
    pinMaxChecks: e.PIN_MAX_CHECKS,
    scanTtlSec: e.SCAN_TTL_SEC,
    offlineMaxAgeMs: e.OFFLINE_MAX_AGE_MS ?? Math.min(86_400_000, e.SCAN_TTL_SEC * 1000),
    expirySweepMs: e.EXPIRY_SWEEP_MS,
    guessLimit: e.GUESS_LIMIT,
    guessWindowSec: e.GUESS_WINDOW_SEC,
    switchGuessLimit: e.SWITCH_GUESS_LIMIT,
    hooks: {
      concurrency: e.HOOK_CONCURRENCY,
      // A receiver alone may use the slots but one, so one that is slow or down always leaves a slot free.
      perReceiver: Math.min(e.HOOK_CONCURRENCY, e.HOOK_RECEIVER_CONCURRENCY || Math.max(1, e.HOOK_CONCURRENCY - 1)),
      timeoutMs: e.HOOK_TIMEOUT_MS,
      pollMs: e.HOOK_POLL_MS,
      // Longer than any delivery in progress can take, so no gateway takes over one that is still trying.
      claimIdleMs: e.HOOK_CLAIM_IDLE_MS || 2 * e.HOOK_TIMEOUT_MS + 5000,
      retryBaseMs: e.HOOK_RETRY_BASE_MS,
      retryMaxMs: Math.max(e.HOOK_RETRY_MAX_MS, e.HOOK_RETRY_BASE_MS),
      maxAttempts: e.HOOK_MAX_ATTEMPTS,
      maxAgeMs: e.HOOK_MAX_AGE_MS,
      expiringSweepMs: e.EXPIRING_SWEEP_MS,
    },
  };
  return { ...cfg, ...overrides };
}

/**
 * Which card company a gateway start sells through: the configured one
 * (PROVIDER_URL), or the sandbox card company when it was asked for with
 * `--sandbox` (what `npm start` passes) outside production. A start with
 * neither refuses: silently selling real IDs against the sandbox's test
 * cards would give them away.
 */
export function paymentSetup(
  cfg: Pick<Config, 'provider'>,
  sandboxAsked: boolean,
  nodeEnv: string | undefined = process.env.NODE_ENV,
): 'provider' | 'sandbox' {
  if (cfg.provider.url) return 'provider';
  if (!sandboxAsked)
    throw new ConfigError(
      'no card company: set PROVIDER_URL (and PROVIDER_KEY) to sell IDs; ' +
        'the sandbox card company (test cards, no real money) runs only with --sandbox, as `npm start` does',
    );
  if (nodeEnv === 'production')
    throw new ConfigError(
      '--sandbox with NODE_ENV=production: the sandbox card company (test cards, no real money) is for development only; set PROVIDER_URL',
    );
  return 'sandbox';
}
