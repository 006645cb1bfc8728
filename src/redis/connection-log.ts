/**
 * What a Redis connection says about itself, in the process's log: one
 * warning when it is lost (with why), one line when it is back, nothing for
 * each retry in between. Without an `error` listener ioredis prints every
 * failed reconnection to stderr as an "Unhandled error event", several a
 * second per connection while Redis is away; and the commands that fail
 * meanwhile report themselves (`unavailable`), so the connection's own
 * errors are only worth a line per change of state.
 */
import { Cluster, type Redis } from 'ioredis';
import type { Logger } from 'pino';

/** Logs a connection's (or, in a Cluster, each node's) losses and recoveries. */
export function logConnection(client: Redis | Cluster, log: Logger | undefined, name: string): void {
  watch(client, log, name);
  if (client instanceof Cluster)
    client.on('+node', (node: Redis) => watch(node, log, name, `${node.options.host}:${node.options.port}`));
}

function watch(conn: Redis | Cluster, log: Logger | undefined, name: string, node?: string): void {
  let down = false;
  const lost = (err?: Error): void => {
    if (down) return;
    down = true;
    log?.warn({ redis: name, node, err: err?.message }, 'redis: connection lost; reconnecting');
  };
  conn.on('error', lost);
  // A server that went away and is back before the first retry causes no error at all.
  conn.on('reconnecting', () => lost());
  conn.on('ready', () => {
    if (!down) return;
    down = false;
    log?.info({ redis: name, node }, 'redis: connected again');
  });
}
