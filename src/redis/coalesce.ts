import type { Socket } from 'node:net';
import type Redis from 'ioredis';
import { Cluster } from 'ioredis';

/**
 * Commands issued in one event-loop iteration leave in one write: the socket is
 * corked at the first write and uncorked in the iteration's check phase
 * (setImmediate), after every I/O callback of the poll phase (all the frames and
 * requests that came in, all the replies that were read) has issued its
 * commands. ioredis writes every command as it comes, and a syscall per command
 * cost a redemption more CPU than all the rest of its handling. Code that runs
 * in the check phase itself (the tick batcher) calls sendNow() rather than wait
 * for the next iteration.
 */
const uncorkers = new WeakMap<Redis, () => void>();

export function coalesceWrites(client: Redis): void {
  client.on('connect', () => {
    const stream = (client as unknown as { stream: Socket }).stream;
    const write = stream.write.bind(stream);
    let corked = false;
    const uncork = (): void => {
      if (!corked) return;
      corked = false;
      stream.uncork();
    };
    uncorkers.set(client, uncork);
    stream.write = function (this: Socket, ...args: Parameters<Socket['write']>): boolean {
      if (!corked) {
        corked = true;
        stream.cork();
        setImmediate(uncork);
      }
      return write(...args);
    } as Socket['write'];
  });
}

/** Writes what this client holds back now (see coalesceWrites). */
export function sendNow(client: Redis | Cluster): void {
  if (client instanceof Cluster) for (const node of client.nodes('master')) uncorkers.get(node)?.();
  else uncorkers.get(client)?.();
}
