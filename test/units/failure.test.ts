import { Cluster } from 'ioredis';
import MaxRetriesPerRequestError from 'ioredis/built/errors/MaxRetriesPerRequestError';
import { describe, expect, it } from 'vitest';
import { failureReason } from '../../src/gateway/dispatch';
import { freePort } from '../../src/redis/embedded';

/**
 * What a client is told when Redis fails: storage trouble is `unavailable`
 * (retry later), never `internal`. The errors come from ioredis itself, so a
 * changed message in a new version shows up here, not in production.
 */
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
