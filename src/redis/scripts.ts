/**
 * Lua scripts live one per file in lua/, with shared pieces in lua/includes/
 * pulled in by `-- @include "name"` (the BullMQ way). Each is registered with
 * ioredis' defineCommand, which calls EVALSHA and falls back to EVAL (which
 * reloads it) on NOSCRIPT; at start every script is also SCRIPT LOADed on every
 * primary so the first calls already hit by SHA and /readyz can say so.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { RedisClient } from './connect';

export interface Script {
  name: string;
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

type Runner = (numKeys: number, ...keysAndArgs: (string | number)[]) => Promise<unknown>;

/** Told the round-trip time of every script call (the gateway feeds its latency histogram). */
export type ScriptTimer = (script: string, ms: number) => void;

export class Scripts {
  private readonly byName = new Map<string, Script>();
  loaded = false;
  /** Set by whoever keeps metrics; every call through run/runFlat is timed into it. */
  timer: ScriptTimer | undefined;

  constructor(
    private readonly client: RedisClient,
    scripts: Script[] = readScripts(),
  ) {
    for (const s of scripts) {
      this.byName.set(s.name, s);
      client.defineCommand(s.name, { lua: s.lua });
    }
  }

  /** SCRIPT LOAD on every primary (or the one Redis). */
  async load(): Promise<void> {
    const nodes = 'nodes' in this.client ? this.client.nodes('master') : [this.client];
    for (const node of nodes) {
      for (const s of this.byName.values()) {
        const sha = await node.script('LOAD', s.lua);
        if (sha !== s.sha) throw new Error(`SHA mismatch for ${s.name}`);
      }
    }
    this.loaded = true;
  }

  run<T = unknown>(name: string, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
    return this.runFlat<T>(name, [keys.length, ...keys, ...args]);
  }

  /** For hot paths that build the call in one array: the key count, the keys, then the arguments. */
  runFlat<T = unknown>(name: string, numKeysKeysArgs: (string | number)[]): Promise<T> {
    const fn = this.byName.has(name) ? (this.client as unknown as Record<string, Runner>)[name] : undefined;
    if (!fn) throw new Error(`unknown script ${name}`);
    const timer = this.timer;
    if (!timer) return fn.apply(this.client, numKeysKeysArgs as [number, ...(string | number)[]]) as Promise<T>;
    const t0 = performance.now();
    return (fn.apply(this.client, numKeysKeysArgs as [number, ...(string | number)[]]) as Promise<T>).then(
      (reply) => {
        timer(name, performance.now() - t0);
        return reply;
      },
      (err: unknown) => {
        timer(name, performance.now() - t0);
        throw err;
      },
    );
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }
}
