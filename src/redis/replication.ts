/**
 * Replicated acknowledgements. Redis replicates asynchronously: a write its
 * primary answered and had not yet passed on is gone once a replica takes over.
 * The writes whose loss costs money (starts, stops, redemptions, sales) are
 * therefore answered only once a replica has them: `replicated(client, key)`
 * resolves when every write this client has had answered by the primary that
 * serves `key` is on at least one replica, and rejects with a
 * ReplicationTimeout (an `unavailable` answer, never a false success) when
 * that takes longer than the timeout.
 *
 * WAIT covers every write sent before it on the same connection, so the
 * requests of one event-loop turn share one WAIT per primary: a batch of a
 * group commit, or a hundred starts answered in the same turn, cost one WAIT.
 *
 * WAIT must reach the primary that took the writes over the connection they
 * went on: on any other connection it covers nothing and answers at once. So
 * every node connection notes, per slot, the last write it answered (a write
 * the cluster client redirected, retried or re-sent is noted on the
 * connection that finally answered it), and WAIT is sent on that connection
 * itself, never through the cluster client, which would redirect or retry it
 * elsewhere. A connection that closed after the write fails the WAIT too.
 *
 * An answer can also report a write this client did not make: a retry that a
 * script answers from the first try's write (a duplicate), made by another
 * gateway or on a connection that broke before its WAIT. WAIT covers only the
 * writes of its own connection, so `replicatedSeen` first writes a fence (one
 * SET of the bucket's fence key) on the connection that gave the answer, then
 * WAITs there: replication is in order, so a replica that has the fence has
 * every write the primary had applied before it, the first try's included.
 * The fence and the WAIT leave together; an answer that wrote costs no fence.
 */
import type Redis from 'ioredis';
import { Cluster } from 'ioredis';
import { sendNow } from './coalesce';
import { bucketOfKey, keys } from './keys';

/** connect.ts's RedisClient (imported from there it would make a ring). */
type RedisClient = Redis | Cluster;

export interface AckSettings {
  /** Replicas that must have a write before it is acknowledged. */
  replicas: number;
  /** How long to wait for them (ms). */
  timeoutMs: number;
}

/** The replicas did not confirm in time (or the primary's connection broke): the client sees `unavailable`. */
export class ReplicationTimeout extends Error {
  constructor(detail: string) {
    super(`Not replicated: ${detail}`);
    this.name = 'ReplicationTimeout';
  }
}

type Done = (err?: Error) => void;

/** One caller waiting for a WAIT: the close count of the connection its write was answered on. */
interface Waiter {
  done: Done;
  closes: number;
  /** Its answer reported writes of other connections: only the fence's replication covers them. */
  fenced: boolean;
}

/** One connection's waiters for its next WAIT. */
interface NodeQueue {
  waiting: Waiter[];
  /** A fence key in a slot this connection answered for, when a waiter needs a fence. */
  fence?: string;
}

/** The connection that last answered a write for a slot, and its close count then. */
interface Writer {
  node: Redis;
  closes: number;
}

/** Commands that never write: they do not say where a slot's writes went. */
const READS = new Set([
  'get',
  'mget',
  'hget',
  'hmget',
  'hgetall',
  'exists',
  'ttl',
  'pttl',
  'type',
  'strlen',
  'scard',
  'smembers',
  'sismember',
  'zcard',
  'zscore',
  'zrange',
  'zrangebyscore',
  'xrange',
  'xrevrange',
  'xlen',
  'scan',
  'sscan',
  'hscan',
  'zscan',
  'ping',
  'info',
  'wait',
  'script',
  'cluster',
  'readonly',
  'readwrite',
  'auth',
  'hello',
  'client',
  'select',
  'config',
  'dbsize',
  'subscribe',
  'unsubscribe',
  'psubscribe',
  'punsubscribe',
  'publish',
]);

const ignore = (): void => undefined;

/** Counts each node connection's closes: a WAIT answered after one covers nothing. */
const closes = new WeakMap<Redis, { n: number }>();

function closesOf(node: Redis): { n: number } {
  let c = closes.get(node);
  if (!c) {
    const counter = { n: 0 };
    node.on('close', () => void counter.n++);
    closes.set(node, (c = counter));
  }
  return c;
}

class Acks {
  private readonly queues = new Map<Redis, NodeQueue>();
  private scheduled = false;
  /** Cluster nodes by "host:port", as the slot table names them. */
  private byAddress = new Map<string, Redis>();
  /** Per slot, where its last write was answered. */
  private readonly writers: (Writer | undefined)[] = new Array<Writer | undefined>(16384);

  constructor(
    private readonly client: RedisClient,
    private readonly settings: AckSettings,
  ) {
    if (client instanceof Cluster) client.on('+node', (node: Redis) => this.watch(node));
    else this.watch(client);
  }

  /** Notes, per slot, the connection each write was answered on (and how often it had closed by then). */
  private watch(node: Redis): void {
    const counter = closesOf(node);
    const send = node.sendCommand.bind(node);
    const writers = this.writers;
    node.sendCommand = (command, stream) => {
      const sent = send(command, stream);
      if (!READS.has(command.name)) {
        const slot = command.getSlot();
        if (typeof slot === 'number')
          command.promise.then(() => void (writers[slot] = { node, closes: counter.n }), ignore);
      }
      return sent;
    };
  }

  add(key: string, done: Done, fenced: boolean): void {
    const slot = keySlot(key);
    const writer = this.writers[slot];
    const node = writer?.node ?? this.nodeOf(slot);
    if (!node) return done(new ReplicationTimeout(`no primary known for ${key}`));
    this.addOn(
      node,
      writer ? writer.closes : closesOf(node).n,
      done,
      fenced ? keys.fence(bucketOfKey(key)) : undefined,
    );
  }

  /** Waits on `node`'s own connection, which had closed `closes` times when the writes to cover were sent. */
  addOn(node: Redis, closes: number, done: Done, fence?: string): void {
    if (closesOf(node).n !== closes) return done(new ReplicationTimeout('the connection to the primary closed'));
    let q = this.queues.get(node);
    if (!q) this.queues.set(node, (q = { waiting: [] }));
    q.waiting.push({ done, closes, fenced: fence !== undefined });
    if (fence !== undefined) q.fence ??= fence;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const { replicas, timeoutMs } = this.settings;
    for (const [node, q] of this.queues) {
      this.queues.delete(node);
      const counter = closesOf(node);
      const waiting = q.waiting;
      // Sent before the WAIT on the same connection, so the WAIT covers it. A fence refused
      // (NOREPLICAS from a primary that lost its replicas, MOVED, READONLY) confirms nothing.
      const fence =
        q.fence === undefined
          ? undefined
          : node.call('SET', q.fence, String(Date.now())).then(
              () => undefined,
              (err: unknown) =>
                new ReplicationTimeout(`the fence write failed: ${err instanceof Error ? err.message : String(err)}`),
            );
      const answer = (err: Error | undefined, fenceErr: Error | undefined): void => {
        for (const w of waiting)
          w.done(
            err ??
              (w.fenced ? fenceErr : undefined) ??
              (counter.n !== w.closes ? new ReplicationTimeout('the connection to the primary closed') : undefined),
          );
      };
      const waited = (node.call('WAIT', replicas, timeoutMs) as Promise<number>).then(
        (acked) =>
          acked < replicas
            ? new ReplicationTimeout(`${acked} of ${replicas} replica(s) confirmed within ${timeoutMs} ms`)
            : undefined,
        // Whatever kept WAIT from answering (a broken connection, a timeout, a primary demoted
        // to replica meanwhile: "WAIT cannot be used with replica instances"), nothing was confirmed.
        (err: unknown) => new ReplicationTimeout(`WAIT failed: ${err instanceof Error ? err.message : String(err)}`),
      );
      void Promise.all([waited, fence]).then(([err, fenceErr]) => answer(err, fenceErr));
    }
    // This runs in the check phase: without this the WAITs would leave an iteration later (see coalesceWrites).
    sendNow(this.client);
  };

  /** The connection of the primary serving a slot: the client itself, or the cluster node its slot table names. */
  private nodeOf(slot: number): Redis | undefined {
    if (!(this.client instanceof Cluster)) return this.client;
    const address = this.client.slots[slot]?.[0];
    if (address === undefined) return undefined;
    let node = this.byAddress.get(address);
    if (!node || node.status === 'end') {
      this.byAddress = new Map(this.client.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
      node = this.byAddress.get(address);
    }
    return node;
  }
}

const acksOf = new WeakMap<RedisClient, Acks>();

/** From now on this client's replicated() waits for replicas (connectRedis calls it when the setting is on). */
export function requireReplicas(client: RedisClient, settings: AckSettings): void {
  acksOf.set(client, new Acks(client, settings));
}

/** Whether this client waits for replicas before acknowledging. */
export function waitsForReplicas(client: RedisClient): boolean {
  return acksOf.has(client);
}

/**
 * Calls `done` once the writes this client has had answered on the primary
 * serving `key` are on the required replicas, or with the error that says why
 * not. At once (synchronously) when the client does not wait for replicas.
 * `seen`: the answer reported writes this client may not have made; they are
 * covered too, at the cost of a fence write (see replicatedSeen).
 */
export function whenReplicated(
  client: RedisClient,
  key: string,
  done: (err?: Error) => void,
  seen: 'written' | 'seen' = 'written',
): void {
  const acks = acksOf.get(client);
  if (!acks) return done();
  acks.add(key, done, seen === 'seen');
}

/** whenReplicated as a promise; undefined (nothing to wait for) when the client does not wait for replicas. */
export function replicated(client: RedisClient, ...keysToCover: string[]): Promise<void> | undefined {
  return waitFor(client, false, keysToCover);
}

/**
 * replicated() for an answer that reports writes this client may not have
 * made (a duplicate answer to a retry): resolves once everything the primary
 * serving each key had applied when it answered is on the replicas, whoever
 * wrote it. Costs a fence write before the WAIT.
 */
export function replicatedSeen(client: RedisClient, ...keysToCover: string[]): Promise<void> | undefined {
  return waitFor(client, true, keysToCover);
}

/**
 * replicated() for a process starting, which waits for a replica a while
 * behind as it waits for Redis itself (waitReady): asked again while it fails,
 * until `timeoutMs` has passed. A failed WAIT leaves the writes it was to cover
 * owed; the next WAIT on their connection covers them.
 */
export async function replicatedAtStart(client: RedisClient, key: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await replicated(client, key);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** How often `node`'s connection has closed: taken before writes sent on it directly, for replicatedOn. */
export function closeCount(node: Redis): number {
  return closesOf(node).n;
}

/**
 * replicated() for writes sent on one node's connection itself rather than
 * through the client by key (FUNCTION LOAD on each primary): resolves once a
 * replica has every write answered on that connection. `closes` is its
 * closeCount() from before the writes: a connection that closed since fails,
 * as for replicated().
 */
export function replicatedOn(client: RedisClient, node: Redis, closes: number): Promise<void> | undefined {
  const acks = acksOf.get(client);
  if (!acks) return undefined;
  return new Promise<void>((resolve, reject) => acks.addOn(node, closes, (err) => (err ? reject(err) : resolve())));
}

function waitFor(client: RedisClient, fenced: boolean, keysToCover: string[]): Promise<void> | undefined {
  const acks = acksOf.get(client);
  if (!acks) return undefined;
  return Promise.all(
    keysToCover.map(
      (key) => new Promise<void>((resolve, reject) => acks.add(key, (err) => (err ? reject(err) : resolve()), fenced)),
    ),
  ).then(() => undefined);
}

/** CRC16 (XMODEM) lookup table, as Redis Cluster hashes keys to slots. */
const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/** The Redis Cluster slot of a key: CRC16 of its hash tag (the first non-empty {...}) or of the whole key, mod 16384. */
export function keySlot(key: string): number {
  const open = key.indexOf('{');
  let part = key;
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) part = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(part)) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 16383;
}
