/**
 * Whether a failed request met storage trouble (`unavailable`: the client may
 * retry) or a bug (`internal`), told from ioredis' error classes and Node's
 * error codes where they exist.
 */
import { ReplyError } from 'ioredis';
import ClusterAllFailedError from 'ioredis/built/errors/ClusterAllFailedError';
import MaxRetriesPerRequestError from 'ioredis/built/errors/MaxRetriesPerRequestError';
import { ReplicationTimeout } from './replication';

export type FailureReason = 'unavailable' | 'overloaded' | 'internal';

/**
 * Error replies (a ReplyError's first word) of a server that cannot serve now but
 * will: a cluster without quorum, resharding or failing over (CLUSTERDOWN,
 * TRYAGAIN, MOVED, MASTERDOWN, READONLY: a primary turned replica), loading its
 * data (LOADING), out of memory (OOM), busy in a script (BUSY), unable to persist
 * (MISCONF), short of the replicas it must write to (NOREPLICAS: min-replicas-to-write).
 * Any other error reply (ERR, WRONGTYPE, NOSCRIPT...) is a bug.
 */
const UNAVAILABLE_CODES = [
  'CLUSTERDOWN',
  'TRYAGAIN',
  'MOVED',
  'MASTERDOWN',
  'READONLY',
  'LOADING',
  'OOM',
  'BUSY',
  'MISCONF',
  'NOREPLICAS',
];
const unavailableCode = new Set(UNAVAILABLE_CODES);

/** Node's codes for a connection to Redis that could not be made or broke. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT']);

/**
 * Messages, for want of a class: ioredis reports these as a plain Error (a closed
 * connection, a command timeout, no connection with the offline queue off, a
 * cluster with no node to ask or out of redirections) or as one of redis-errors'
 * AbortError and RedisError, which it does not export.
 */
const UNAVAILABLE_MESSAGE =
  /^(?:Connection is closed\.|Command timed out|Command aborted due to connection close|Connection is (?:aborted|discarded)|Socket timeout\.|Stream isn't writeable|Cluster isn't ready|Cluster is disconnect|Node is disconnected|None of startup nodes is available|Too many Cluster redirections)/;

/**
 * A batch script that fails one item and goes on hands the item's error reply
 * back as text, which the services throw as a plain Error ("redeem failed:
 * READONLY ..."): no class survives that, so the code is looked for in the text.
 */
const RELAYED_CODE = new RegExp(`\\b(?:${UNAVAILABLE_CODES.join('|')})\\b`);

/**
 * A request that waited longer than REDIS_TIMEOUT_MS for its turn at Redis,
 * behind its client's other lookups (GuessThrottle): Redis is too slow now,
 * and the client is told so as for any request that waited that long on it.
 */
export class TurnTimeout extends Error {
  /** `busy`: the client's other lookups were answered meanwhile; it has more waiting than Redis answers in time. */
  constructor(readonly busy = false) {
    super('waited its turn at Redis for longer than REDIS_TIMEOUT_MS');
  }
}

/**
 * What kind of Redis trouble an error was, for the script failures counter: the error reply's code
 * when it is one of UNAVAILABLE_CODES (OOM: memory full), `unreachable` for a connection lost,
 * refused or timed out, `other` for anything else (a bug). A bounded set, fit for a label.
 */
export function failureCode(err: unknown): string {
  if (!(err instanceof Error)) return 'other';
  if (err instanceof ReplyError) {
    const code = err.message.split(' ', 1)[0] ?? '';
    return unavailableCode.has(code) ? code : 'other';
  }
  const relayed = RELAYED_CODE.exec(err.message)?.[0];
  if (relayed) return relayed;
  return failureReason(err) === 'unavailable' ? 'unreachable' : 'other';
}

/**
 * Maps a thrown error to the reason a client sees: Redis trouble is `unavailable`, a client's own
 * queue too long to be served in time `overloaded`, anything else `internal`.
 */
export function failureReason(err: unknown): FailureReason {
  if (!(err instanceof Error)) return 'internal';
  if (err instanceof TurnTimeout && err.busy) return 'overloaded';
  if (err instanceof ReplyError)
    return unavailableCode.has(err.message.split(' ', 1)[0] ?? '') ? 'unavailable' : 'internal';
  // A write no replica confirmed in time may yet be lost: never a success, and the client may retry.
  if (
    err instanceof MaxRetriesPerRequestError ||
    err instanceof ClusterAllFailedError ||
    err instanceof ReplicationTimeout ||
    err instanceof TurnTimeout
  )
    return 'unavailable';
  const { code, syscall } = err as NodeJS.ErrnoException;
  if ((code !== undefined && NETWORK_CODES.has(code)) || syscall === 'connect') return 'unavailable';
  return UNAVAILABLE_MESSAGE.test(err.message) || RELAYED_CODE.test(err.message) ? 'unavailable' : 'internal';
}
