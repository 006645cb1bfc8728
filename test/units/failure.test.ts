/**
 * What a client is told when Redis fails: storage trouble is `unavailable`
 * (retry later), never `internal`. The errors come from ioredis itself, so a
 * changed message in a new version shows up here, not in production.
 */
import { Cluster } from 'ioredis';
import MaxRetriesPerRequestError from 'ioredis/built/errors/MaxRetriesPerRequestError';
import { describe, expect, it } from 'vitest';
import { Type } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Config } from '../../src/config/config';
import type { Conn } from '../../src/gateway/connection';
import { Dispatcher, failureReason, type Routes } from '../../src/gateway/dispatch';
import type { Metrics } from '../../src/observability/metrics';
import { compile } from '../../src/protocol/switch';
import { freePort } from '../../src/redis/embedded';

describe('failureReason', () => {
  it('a cluster whose nodes are all down: unavailable', async () => {
    const port = await freePort();
    const cluster = new Cluster([{ host: '127.0.0.1', port }], { lazyConnect: true, enableOfflineQueue: false, clusterRetryStrategy: () => null });
    cluster.on('error', () => undefined);
    const refused = await cluster.connect().then(() => undefined, (err: unknown) => err);
    expect(refused).toBeInstanceOf(Error);
    expect(failureReason(refused)).toBe('unavailable');
    const notReady = await cluster.get('x').then(() => undefined, (err: unknown) => err);
    expect(notReady).toBeInstanceOf(Error);
    expect(failureReason(notReady)).toBe('unavailable');
    cluster.disconnect();
  });

  it('a command that ran out of retries: unavailable', () => {
    expect(failureReason(new MaxRetriesPerRequestError(1))).toBe('unavailable');
  });

  it('a bug is internal', () => {
    expect(failureReason(new TypeError("Cannot read properties of undefined (reading 'x')"))).toBe('internal');
  });
});

describe('Dispatcher', () => {
  it('a callback handler that throws fails its own message, internal, and the messages after it in the frame still run', () => {
    const replies: object[] = [];
    const conn = { inflight: 0, reply: { json: (m: object) => replies.push(m), msgpack: (m: object) => replies.push(m) }, send: (m: object) => replies.push(m) } as unknown as Conn;
    const load = { inflight: 0, max: 100 };
    const check = compile(Type.Object({ op: Type.String(), ref: Type.Number() }));
    const routes: Routes = {
      boom: { check, handleCb: () => { throw new Error('bug'); } },
      echo: { check, handleCb: (m: { ref: number }, _c, reply, done) => { reply({ op: 'echoed', ref: m.ref }); done(); } },
    };
    const cfg = { maxFrameBytes: 1 << 20, maxBatch: 10, maxInflight: 10 } as Config;
    const metrics = { event: () => undefined } as unknown as Metrics;
    const log = { error: () => undefined } as unknown as Logger;
    const frame = new TextEncoder().encode(JSON.stringify([{ op: 'boom', ref: 1 }, { op: 'echo', ref: 2 }]));
    new Dispatcher(routes, cfg, metrics, log, load).onFrame(conn, frame.buffer as ArrayBuffer, false);
    expect(replies).toEqual([{ op: 'error', ref: 1, reason: 'internal', message: 'internal error' }, { op: 'echoed', ref: 2 }]);
    expect(conn.inflight).toBe(0);
    expect(load.inflight).toBe(0);
  });
});
