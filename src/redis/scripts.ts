/**
 * Lua scripts live one per file in lua/, with shared pieces in lua/includes/
 * pulled in by `-- @include "name"` (the BullMQ way). The gateway runs them as
 * one Redis function library: every include is defined once, when the library
 * is loaded, and each script is a function whose body runs per FCALL. As EVAL
 * scripts, every call defined all its includes' functions again and parsed the
 * tariff again: about a fifth of call_tick's Redis time. The library and its
 * functions are named after its code's digest, so gateways of two versions can
 * share a Redis during an upgrade, each calling its own code. It is loaded on
 * every primary at start, and again wherever a call finds it missing (a Redis
 * restarted without its data, a new node).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Redis, { Cluster } from 'ioredis';
import { Unpackr } from 'msgpackr';
import type { RedisClient } from './connect';
import { closeCount, replicatedOn } from './replication';

export interface Script {
  name: string;
  /** The script with its includes expanded: what EVAL would run (benchmarks and tests use it). */
  lua: string;
  sha: string;
}

export function findRepoDir(sub: string): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, sub);
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`cannot find ${sub}/ above ${__dirname}`);
  }
}

const INCLUDE = /^--\s*@include\s+"([\w-]+)"\s*$/gm;

/**
 * A script's text with its includes expanded in place, recursively: an include
 * may include others, each piece appears once (where it is first included) and
 * a cycle is an error rather than a stack overflow.
 */
export function expandIncludes(text: string, readInclude: (name: string) => string, where = 'script'): string {
  const done = new Set<string>();
  const expand = (body: string, chain: string[]): string =>
    body.replace(INCLUDE, (_, name: string) => {
      if (chain.includes(name)) throw new Error(`include cycle in ${where}: ${[...chain, name].join(' -> ')}`);
      if (done.has(name)) return '';
      done.add(name);
      return expand(readInclude(name), [...chain, name]);
    });
  return expand(text, []);
}

/** Reads lua/includes/<name>.lua of a lua/ folder. */
const includesOf =
  (dir: string) =>
  (name: string): string =>
    readFileSync(join(dir, 'includes', `${name}.lua`), 'utf8');

/** Any Lua source with the shipped includes expanded, as the scripts get them (tests run pieces this way). */
export function expandLua(text: string, where = 'script', dir = findRepoDir('lua')): string {
  return expandIncludes(text, includesOf(dir), where);
}

/** Every lua/*.lua file is a script named after its file; lua/includes/ holds the shared pieces. */
export function readScripts(dir = findRepoDir('lua')): Script[] {
  const include = includesOf(dir);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.lua'))
    .sort()
    .map((file) => {
      const lua = expandIncludes(readFileSync(join(dir, file), 'utf8'), include, file);
      return { name: file.slice(0, -4), lua, sha: createHash('sha1').update(lua).digest('hex') };
    });
}

/** Every script of a lua/ folder as one function library (FUNCTION LOAD). */
export interface Library {
  name: string;
  code: string;
  /** A script's function name in the library. */
  functions: Map<string, string>;
  /** The scripts whose reply the library sends as one MessagePack string (`-- @reply msgpack`). */
  packed: Set<string>;
}

/** Every version's library is named this and its code's digest. */
const LIBRARY_PREFIX = 'tessera_';

const TOP_LOCAL = /^local\s+(?:function\s+)?([\w\s,]+?)\s*(?:=|\(|$)/gm;

/**
 * A script that declares `-- @reply msgpack` has its reply packed by Redis
 * (cmsgpack) into one string, which Scripts unpacks: a reply of many integers
 * costs ioredis' RESP decoder about 0.6 µs each and msgpackr a tenth of that.
 * Its strings come back as text, and Lua numbers as they are (RESP would
 * truncate a fraction): such a script returns integers, text and arrays only.
 */
const PACKED_REPLY = /^--\s*@reply\s+msgpack\s*$/m;
/**
 * `-- @flags no-writes` (a script that only reads) or `-- @flags allow-oom` (one that only deletes)
 * declares the function's flags. A function with none may write, and Redis refuses it whole while
 * its memory is over `maxmemory` (noeviction, deploy/redis.conf): a read would then be answered
 * `unavailable` for want of memory it does not use, and an event already delivered could not be
 * deleted, so it would be sent again at every takeover until memory is freed.
 */
const FLAGS = /^--\s*@flags\s+((?:no-writes|allow-oom)(?:\s+(?:no-writes|allow-oom))*)\s*$/m;

/** Wraps a packed-reply script's function, once, when the library loads. */
const PACK_WRAPPER =
  'local function tessera_packed_reply(f)\n  return function(KEYS, ARGV) return cmsgpack.pack(f(KEYS, ARGV)) end\nend';

/**
 * The library: each include once, at its top, then one function per script whose
 * body is the script's own text (KEYS and ARGV become its arguments, so an
 * include cannot use them). Includes that never met in one script meet here:
 * two that define the same top-level name would silently shadow one another,
 * so that is an error.
 */
export function readLibrary(dir = findRepoDir('lua')): Library {
  const include = includesOf(dir);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.lua'))
    .sort();
  const texts = files.map((f) => readFileSync(join(dir, f), 'utf8'));
  const includeLines = texts.flatMap((t) => t.match(INCLUDE) ?? []);
  const definedBy = new Map<string, string>();
  const checked = (name: string): string => {
    const text = include(name);
    // Outside the scripts' functions there are no KEYS or ARGV: an include is given what it needs.
    const code = text.replace(/--.*$/gm, '');
    if (/\b(?:KEYS|ARGV)\b/.test(code)) throw new Error(`include ${name} uses KEYS or ARGV: pass them in`);
    for (const m of text.matchAll(TOP_LOCAL))
      for (const local of m[1]!.split(',').map((x) => x.trim())) {
        const other = definedBy.get(local);
        if (other !== undefined && other !== name)
          throw new Error(`includes ${other} and ${name} both define ${local}`);
        definedBy.set(local, name);
      }
    return text;
  };
  const top = expandIncludes(includeLines.join('\n'), checked, 'library');
  const bodies = texts.map((t) => t.replace(INCLUDE, ''));
  const version = createHash('sha1')
    .update(PACK_WRAPPER + top + bodies.join('\0'))
    .digest('hex')
    .slice(0, 12);
  const functions = new Map<string, string>();
  const packed = new Set<string>();
  const parts = [`#!lua name=${LIBRARY_PREFIX}${version}`, top, PACK_WRAPPER];
  files.forEach((file, i) => {
    const name = file.slice(0, -4);
    const fn = `${name}_${version}`;
    functions.set(name, fn);
    const body = `function(KEYS, ARGV)\n${bodies[i]!}\nend`;
    const packs = PACKED_REPLY.test(texts[i]!);
    if (packs) packed.add(name);
    const callback = packs ? `tessera_packed_reply(${body})` : body;
    const flags = FLAGS.exec(texts[i]!)?.[1]!.split(/\s+/) ?? [];
    parts.push(
      flags.length === 0
        ? `redis.register_function('${fn}', ${callback})`
        : `redis.register_function{function_name='${fn}', callback=${callback}, flags={${flags.map((f) => `'${f}'`).join(', ')}}}`,
    );
  });
  return { name: `${LIBRARY_PREFIX}${version}`, code: parts.join('\n'), functions, packed };
}

/** The names of the Tessera function libraries on `node` but `mine`. */
async function otherVersions(node: Redis, mine: string): Promise<string[]> {
  // FUNCTION LIST answers one flat [field, value, ...] array per library.
  const libs = (await node.function('LIST', 'LIBRARYNAME', `${LIBRARY_PREFIX}*`)) as unknown[][];
  return libs
    .map((lib) => lib[lib.indexOf('library_name') + 1])
    .filter((name): name is string => typeof name === 'string' && name.startsWith(LIBRARY_PREFIX) && name !== mine);
}

/** FCALL's error for a function the server does not have. */
const isMissingFunction = (err: unknown): boolean =>
  err instanceof Error && err.message.startsWith('ERR Function not found');

type Fcall = (fn: string, ...numKeysKeysArgs: (string | number)[]) => Promise<unknown>;

/** Packed replies: Lua numbers past 2^32 arrive as 64-bit integers, which must come back as numbers. */
const replies = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });
const unpackReply = (reply: unknown): unknown => replies.unpack(reply as Buffer);

/** Told the round-trip time of every script call (the gateway feeds its latency histogram). */
export type ScriptTimer = (script: string, ms: number) => void;
export type ScriptFailed = (script: string, err: unknown) => void;

export class Scripts {
  loaded = false;
  /** Set by whoever keeps metrics; every call through run/runFlat is timed into it. */
  timer: ScriptTimer | undefined;
  /** Told of every call that failed (Redis refused it, or could not be reached): counted by kind. */
  failed: ScriptFailed | undefined;
  private readonly fcall: Fcall;
  private readonly fcallBuffer: Fcall;
  private reloading: Promise<void> | undefined;

  constructor(
    private readonly client: RedisClient,
    readonly library: Library = readLibrary(),
  ) {
    this.fcall = client.fcall.bind(client);
    // ioredis has fcallBuffer but does not type it.
    this.fcallBuffer = (fn, ...args) => client.callBuffer('FCALL', fn, ...args);
  }

  /**
   * FUNCTION LOAD on every primary (or the one Redis); a library already there is
   * the same code. `prune` (a process starting) also deletes the libraries of
   * other versions, or every deploy would leave one behind for good. A process
   * of another version still running finds its own gone at its next call and
   * loads it again, without pruning: one reload per start, no back and forth.
   *
   * `confirm` (a process starting): with replicated acknowledgements on, every
   * library this process loaded is on a replica before load returns. At run
   * time the calls that follow a reload confirm it with their own WAIT on the
   * same connection; a start has nothing to follow, and a library lost in a
   * failover right after a first start must be loaded again by every later
   * start, on a primary that, short of its replica, refuses it (NOREPLICAS).
   * One not yet confirmed stays owed: the next load confirms it, though it
   * finds the library there and loads nothing; on a connection that closed
   * since, which no WAIT covers, by loading it again (REPLACE), and on a
   * primary no longer one (a failover) by the look at its successor.
   */
  async load({ prune = false, confirm = false } = {}): Promise<void> {
    const client = this.client;
    // After a failover the cached node list may still name the failed primary.
    if (client instanceof Cluster)
      await new Promise<void>((ok, no) => client.refreshSlotsCache((err) => (err ? no(err) : ok())));
    const nodes = client instanceof Cluster ? client.nodes('master') : [client];
    // A node's connection the client has replaced (a Cluster's, once closed) is owed on its successor at
    // the same address, which loads it again (-1: no close count matches); one no longer a primary is not.
    for (const node of [...this.unconfirmed.keys()]) {
      if (nodes.includes(node)) continue;
      this.unconfirmed.delete(node);
      const same = nodes.find((n) => n.options.host === node.options.host && n.options.port === node.options.port);
      if (same && !this.unconfirmed.has(same)) this.unconfirmed.set(same, -1);
    }
    for (const node of nodes) await this.loadOn(node, prune, confirm);
    if (client instanceof Cluster) await this.loadOnSlotless(client, nodes, prune);
    if (confirm)
      for (const [node, closes] of this.unconfirmed) {
        await replicatedOn(client, node, closes);
        this.unconfirmed.delete(node);
      }
    this.loaded = true;
  }

  /** The connections this process loaded the library on, and their closeCount() before, until a replica has it. */
  private readonly unconfirmed = new Map<Redis, number>();

  private async loadOn(node: Redis, prune: boolean, confirm: boolean): Promise<void> {
    // Look before loading: FUNCTION LOAD is a write, refused (NOREPLICAS) by a primary
    // that has lost its replica, which must not stop a process whose library is there.
    const present = await node.function('LIST', 'LIBRARYNAME', this.library.name);
    const owed = this.unconfirmed.get(node);
    // Loaded by this start on a connection that closed before a replica confirmed it: that WAIT
    // can never succeed (it failed every later look until the start gave up), a write on the
    // connection now can, and replication in order brings the library with it.
    if (owed !== undefined && owed !== closeCount(node)) {
      const closes = closeCount(node);
      await node.function('LOAD', 'REPLACE', this.library.code);
      this.unconfirmed.set(node, closes);
    } else if (!present.length) {
      const closes = closeCount(node);
      await node.function('LOAD', this.library.code).catch((err: unknown) => {
        if (!(err instanceof Error && / already exists/.test(err.message))) throw err;
      });
      if (confirm) this.unconfirmed.set(node, closes);
    }
    if (prune) for (const name of await otherVersions(node, this.library.name)) await node.function('DELETE', name);
  }

  /**
   * A primary with no slot yet (just added, its first slot being migrated to it) is not in
   * the client's node list, yet calls reach it: ASK sends a migrated key's calls there, and
   * a library missing there would fail each of them. It gets the library through a
   * connection of its own. One that cannot take it (NOREPLICAS: no replica yet; not
   * reachable) stops nothing, neither a start nor a reload: most of the calls that found
   * the library missing went to a primary with slots, which has it now, and one ASKed to
   * that node fails on its own when it is called again.
   */
  private async loadOnSlotless(client: Cluster, nodes: Redis[], prune: boolean): Promise<void> {
    const known = new Set(nodes.map((n) => `${n.options.host}:${n.options.port}`));
    const listed = (await nodes[0]?.call('CLUSTER', 'NODES')) as string | undefined;
    for (const line of listed?.trim().split('\n') ?? []) {
      const [, address, flags] = line.split(' ');
      if (!address || !flags || !/\bmaster\b/.test(flags) || /\b(?:fail|handshake|noaddr)\b/.test(flags)) continue;
      const hostPort = address.split('@')[0]!;
      if (known.has(hostPort)) continue;
      const i = hostPort.lastIndexOf(':');
      const node = new Redis({
        ...client.options.redisOptions,
        host: hostPort.slice(0, i),
        port: Number(hostPort.slice(i + 1)),
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      try {
        await node.connect();
        await this.loadOn(node, prune, false);
      } catch {
        // Told by the call sent there again, if any is.
      } finally {
        node.disconnect();
      }
    }
  }

  run<T = unknown>(name: string, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
    return this.runFlat<T>(name, [keys.length, ...keys, ...args]);
  }

  /** For hot paths that build the call in one array: the key count, the keys, then the arguments. */
  runFlat<T = unknown>(name: string, numKeysKeysArgs: (string | number)[]): Promise<T> {
    const fn = this.library.functions.get(name);
    if (!fn) throw new Error(`unknown script ${name}`);
    const timer = this.timer;
    const t0 = timer ? performance.now() : 0;
    const timed = (): void => timer?.(name, performance.now() - t0);
    const packed = this.library.packed.has(name);
    const fcall = packed ? this.fcallBuffer : this.fcall;
    return fcall(fn, ...numKeysKeysArgs).then(
      (reply) => {
        timed();
        return (packed ? unpackReply(reply) : reply) as T;
      },
      (err: unknown) => {
        // Nothing ran: load the library where it is missing and call once more.
        if (!isMissingFunction(err)) {
          timed();
          this.failed?.(name, err);
          throw err;
        }
        return this.reload()
          .then(() => fcall(fn, ...numKeysKeysArgs))
          .then(
            (reply) => (packed ? unpackReply(reply) : reply) as T,
            (again: unknown) => {
              this.failed?.(name, again);
              throw again;
            },
          )
          .finally(timed);
      },
    );
  }

  /** One load at a time, however many calls found the library missing together. */
  private reload(): Promise<void> {
    this.reloading ??= this.load().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  get names(): string[] {
    return [...this.library.functions.keys()];
  }
}
