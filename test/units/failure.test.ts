/**
 * What a client is told when Redis fails: storage trouble is `unavailable`
 * (retry later), never `internal`. The errors come from ioredis itself, so a
 * changed message in a new version shows up here, not in production.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import Redis, { Cluster } from 'ioredis';
import MaxRetriesPerRequestError from 'ioredis/built/errors/MaxRetriesPerRequestError';
import { describe, expect, it } from 'vitest';
import { Type } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Config } from '../../src/config/config';
import type { Conn } from '../../src/gateway/connection';
import { Dispatcher, Load, SHARED_COPIES, type Routes } from '../../src/gateway/dispatch';
import type { Metrics } from '../../src/observability/metrics';
import { compile } from '../../src/protocol/validator';
import { freePort } from '../../src/redis/embedded';
import { failureCode, failureReason } from '../../src/redis/failure';
import { keySlot, ReplicationTimeout } from '../../src/redis/replication';

describe('failureReason', () => {
  it('a cluster whose nodes are all down: unavailable', async () => {
    const port = await freePort();
    const cluster = new Cluster([{ host: '127.0.0.1', port }], {
      lazyConnect: true,
      enableOfflineQueue: false,
      clusterRetryStrategy: () => null,
    });
    cluster.on('error', () => undefined);
    const refused = await cluster.connect().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(Error);
    expect(failureReason(refused)).toBe('unavailable');
    const notReady = await cluster.get('x').then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(notReady).toBeInstanceOf(Error);
    expect(failureReason(notReady)).toBe('unavailable');
    cluster.disconnect();
  });

  it('a command that ran out of retries: unavailable', () => {
    expect(failureReason(new MaxRetriesPerRequestError(1))).toBe('unavailable');
  });

  it('a write no replica confirmed in time: unavailable, never a success', () => {
    expect(failureReason(new ReplicationTimeout('0 of 1 replica(s) confirmed within 1000 ms'))).toBe('unavailable');
  });

  it('a bug is internal', () => {
    expect(failureReason(new TypeError("Cannot read properties of undefined (reading 'x')"))).toBe('internal');
  });

  it('an error reply is unavailable by its code only: a server loading, read-only or out of memory, not a script bug that mentions a timeout', async () => {
    const replies = {
      loading: '-LOADING Redis is loading the dataset in memory',
      readonly: "-READONLY You can't write against a read only replica. script: 756928dd, on @user_script:1.",
      oom: "-OOM command not allowed when used memory > 'maxmemory'.",
      noreplicas: '-NOREPLICAS Not enough good replicas to write.',
      busykey: '-BUSYKEY Target key name already exists.',
      wrongtype: '-WRONGTYPE Operation against a key holding the wrong kind of value',
      script:
        "-ERR user_script:1: Script attempted to access nonexistent global variable 'timeout' script: 0b72898c, on @user_script:1.",
    };
    const got: Record<string, string> = {};
    const codes: Record<string, string> = {};
    for (const [name, reply] of Object.entries(replies)) {
      const err = await withFakeRedis(
        (sock) => sock.write(reply + '\r\n'),
        (redis) => redis.get('x'),
      );
      got[name] = failureReason(err);
      codes[name] = failureCode(err);
    }
    // The script failures counter's label: the code of storage trouble, `other` for a bug.
    expect(codes).toEqual({
      loading: 'LOADING',
      readonly: 'READONLY',
      oom: 'OOM',
      noreplicas: 'NOREPLICAS',
      busykey: 'other',
      wrongtype: 'other',
      script: 'other',
    });
    expect(got).toEqual({
      loading: 'unavailable',
      readonly: 'unavailable',
      oom: 'unavailable',
      noreplicas: 'unavailable',
      busykey: 'internal',
      wrongtype: 'internal',
      script: 'internal',
    });
  });

  it('a command timeout, a connection closed under a command and a refused connection: unavailable', async () => {
    const timedOut = await withFakeRedis(
      () => undefined,
      (redis) => redis.get('x'),
      { commandTimeout: 50 },
    );
    expect(timedOut).toMatchObject({ message: 'Command timed out' });
    expect(failureReason(timedOut)).toBe('unavailable');
    const closed = await withFakeRedis(
      (sock) => sock.destroy(),
      (redis) => redis.get('x'),
    );
    expect(failureReason(closed)).toBe('unavailable');
    // What ioredis emits when it cannot connect: Node's own error, told by its code.
    const port = await freePort();
    const refused = await new Promise<unknown>((resolve) => connect(port, '127.0.0.1').on('error', resolve));
    expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
    expect(failureReason(refused)).toBe('unavailable');
    expect([timedOut, closed, refused].map(failureCode)).toEqual(['unreachable', 'unreachable', 'unreachable']);
  });

  it('an error reply a batch script relays as text keeps its code', () => {
    expect(failureReason(new Error("redeem failed: READONLY You can't write against a read only replica."))).toBe(
      'unavailable',
    );
    expect(failureReason(new Error('call_tick failed: user_script:40: attempt to compare nil with number'))).toBe(
      'internal',
    );
    expect(failureCode(new Error('redeem failed: OOM command not allowed'))).toBe('OOM');
    expect(failureCode('not an error')).toBe('other');
  });
});

/** Runs `command` on an ioredis client whose server answers each command with `answer`; resolves to what it threw. */
async function withFakeRedis(
  answer: (sock: Socket) => void,
  command: (redis: Redis) => Promise<unknown>,
  options: { commandTimeout?: number } = {},
): Promise<unknown> {
  const server: Server = createServer((sock) => sock.on('data', () => answer(sock)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  // RESP2 and no handshake: the fake answers every command alike.
  const redis = new Redis(port, '127.0.0.1', {
    protocol: 2,
    disableClientInfo: true,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    ...options,
  });
  redis.on('error', () => undefined);
  try {
    return await command(redis).then(
      () => undefined,
      (err: unknown) => err,
    );
  } finally {
    redis.disconnect();
    await new Promise((resolve) => server.close(resolve));
  }
}

describe('Dispatcher', () => {
  it('a callback handler that throws fails its own message, internal, and the messages after it in the frame still run', () => {
    const replies: object[] = [];
    const conn = {
      inflight: 0,
      token: { name: 'sw' },
      reply: { json: (m: object) => replies.push(m), msgpack: (m: object) => replies.push(m) },
      send: (m: object) => replies.push(m),
    } as unknown as Conn;
    const load = new Load(100);
    const check = compile(Type.Object({ op: Type.String(), ref: Type.Number() }));
    const routes: Routes = {
      boom: {
        check,
        handleCb: () => {
          throw new Error('bug');
        },
      },
      echo: {
        check,
        handleCb: (m: { ref: number }, _c, reply, done) => {
          reply({ op: 'echoed', ref: m.ref });
          done();
        },
      },
    };
    const cfg = { maxFrameBytes: 1 << 20, maxBatch: 10, maxInflight: 10, maxInflightPerToken: 10 } as Config;
    const metrics = { event: () => undefined } as unknown as Metrics;
    const log = { error: () => undefined } as unknown as Logger;
    const frame = new TextEncoder().encode(
      JSON.stringify([
        { op: 'boom', ref: 1 },
        { op: 'echo', ref: 2 },
      ]),
    );
    new Dispatcher(routes, cfg, metrics, log, load).onFrame(conn, frame.buffer, false);
    expect(replies).toEqual([
      { op: 'error', ref: 1, reason: 'internal', message: 'internal error' },
      { op: 'echoed', ref: 2 },
    ]);
    expect(conn.inflight).toBe(0);
    expect(load.inflight).toBe(0);
  });
});

describe('Load.enterShared', () => {
  it('copies of one payment share one place, up to SHARED_COPIES; more take places of their own; all given back', () => {
    const load = new Load(100);
    for (let i = 0; i < SHARED_COPIES; i++) expect(load.enterShared('buy/a')).toBe(true);
    expect(load.inflight).toBe(1);
    expect(load.enterShared('buy/a')).toBe(true);
    expect(load.enterShared('buy/b')).toBe(true);
    expect(load.inflight).toBe(3);
    // The first copy ends first: the others keep the place.
    load.leaveShared('buy/a');
    expect(load.inflight).toBe(2);
    for (let i = 0; i < SHARED_COPIES; i++) load.leaveShared('buy/a');
    load.leaveShared('buy/b');
    expect(load.inflight).toBe(0);
  });

  it('a copy refused for want of a place takes none', () => {
    const load = new Load(1);
    expect(load.enter()).toBe(true);
    expect(load.enterShared('buy/a')).toBe(false);
    load.leave();
    expect(load.inflight).toBe(0);
    expect(load.enterShared('buy/a')).toBe(true);
    load.leaveShared('buy/a');
    expect(load.inflight).toBe(0);
  });
});

describe('keySlot', () => {
  it('hashes keys to Redis Cluster slots as Redis does: CRC16 of the hash tag, mod 16384', () => {
    // Redis' own reference values (CLUSTER KEYSLOT).
    expect(keySlot('123456789')).toBe(12739);
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('{user1000}.following')).toBe(keySlot('user1000'));
    expect(keySlot('ts:{b3}:id:abc')).toBe(keySlot('b3'));
  });
});
