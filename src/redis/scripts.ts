import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Cluster } from 'ioredis';
import type { RedisClient } from './connect';

/**
 * Lua scripts live one per file in lua/, with shared pieces in lua/includes/
 * pulled in by `-- @include "name"` (the BullMQ way). Each is registered with
 * ioredis' defineCommand, which calls EVALSHA and falls back to EVAL (which
 * reloads it) on NOSCRIPT; at start every script is also SCRIPT LOADed on every
 * primary so the first calls already hit by SHA and /readyz can say so.
 */
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

export function readScripts(dir = findRepoDir('lua')): Script[] {
  const include = (name: string): string => readFileSync(join(dir, 'includes', `${name}.lua`), 'utf8');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.lua'))
    .sort()
    .map((file) => {
      const lua = readFileSync(join(dir, file), 'utf8').replace(INCLUDE, (_, name: string) => include(name));
      return { name: file.slice(0, -4), lua, sha: createHash('sha1').update(lua).digest('hex') };
    });
}

export type ScriptName =
  | 'call_start'
  | 'call_tick'
  | 'call_stop'
  | 'call_reap'
  | 'mint'
  | 'activate'
  | 'set_state'
  | 'redeem'
  | 'scan_claim'
  | 'validate'
  | 'reverse'
  | 'reserve'
  | 'release'
  | 'sell'
  | 'purchase_claim'
  | 'pin_attempt'
  | 'refund';

type Runner = (numKeys: number, ...keysAndArgs: (string | number)[]) => Promise<unknown>;

export class Scripts {
  private readonly byName = new Map<string, Script>();
  loaded = false;

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
    const nodes = 'nodes' in this.client ? (this.client as Cluster).nodes('master') : [this.client];
    for (const node of nodes) {
      for (const s of this.byName.values()) {
        const sha = await node.script('LOAD', s.lua);
        if (sha !== s.sha) throw new Error(`SHA mismatch for ${s.name}`);
      }
    }
    this.loaded = true;
  }

  run<T = unknown>(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]): Promise<T> {
    return this.runFlat<T>(name, [keys.length, ...keys, ...args]);
  }

  /** For hot paths that build the call in one array: the key count, the keys, then the arguments. */
  runFlat<T = unknown>(name: ScriptName, numKeysKeysArgs: (string | number)[]): Promise<T> {
    const fn = (this.client as unknown as Record<string, Runner>)[name];
    if (!fn) throw new Error(`unknown script ${name}`);
    return fn.apply(this.client, numKeysKeysArgs as [number, ...(string | number)[]]) as Promise<T>;
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }
}
