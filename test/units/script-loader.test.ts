import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis/embedded';
import { readLibrary, readScripts, Scripts } from '../../src/redis/scripts';
import { testDir } from '../support/temp';

/** A lua/ folder of fixtures: scripts at the top, pieces under includes/. */
function luaDir(scripts: Record<string, string>, includes: Record<string, string>): string {
  const dir = testDir('tessera-lua-');
  mkdirSync(join(dir, 'includes'));
  for (const [name, text] of Object.entries(scripts)) writeFileSync(join(dir, `${name}.lua`), text);
  for (const [name, text] of Object.entries(includes)) writeFileSync(join(dir, 'includes', `${name}.lua`), text);
  writeFileSync(join(dir, 'notes.txt'), 'not a script');
  return dir;
}

describe('script loader', () => {
  it('names every .lua file of the folder a script, and nothing else', () => {
    const dir = luaDir({ b_second: 'return 2\n', a_first: 'return 1\n' }, { unused: 'local x = 1\n' });
    expect(readScripts(dir).map((s) => s.name)).toEqual(['a_first', 'b_second']);
  });

  it('expands includes recursively, each piece once, in first-include order', () => {
    const dir = luaDir(
      { main: '-- @include "outer"\n-- @include "leaf"\nreturn leaf() + outer()\n' },
      {
        leaf: 'local function leaf() return 1 end\n',
        outer: '-- @include "leaf"\nlocal function outer() return leaf() end\n',
      },
    );
    const [main] = readScripts(dir);
    expect(main!.lua).toBe(
      'local function leaf() return 1 end\n\nlocal function outer() return leaf() end\n\n\nreturn leaf() + outer()\n',
    );
    expect(main!.lua.match(/function leaf/g)).toHaveLength(1);
    expect(main!.sha).toMatch(/^[0-9a-f]{40}$/);
  });

  it('refuses an include cycle, naming it', () => {
    const dir = luaDir({ main: '-- @include "a"\n' }, { a: '-- @include "b"\n', b: '-- @include "a"\n' });
    expect(() => readScripts(dir)).toThrow('include cycle in main.lua: a -> b -> a');
  });

  it('fails on an include that does not exist', () => {
    const dir = luaDir({ main: '-- @include "missing"\n' }, {});
    expect(() => readScripts(dir)).toThrow(/missing\.lua/);
  });

  it('loads the shipped scripts with every include resolved', () => {
    const scripts = readScripts();
    expect(scripts.length).toBeGreaterThanOrEqual(17);
    for (const s of scripts) expect(s.lua, s.name).not.toMatch(/@include/);
  });
});

describe('function library', () => {
  const fixture = (answer = 1): string =>
    luaDir(
      {
        a_first: `-- @include "outer"\nreturn outer() + ${answer}\n`,
        b_second: '-- @include "leaf"\nreturn leaf() + tonumber(ARGV[1]) + #KEYS\n',
      },
      {
        leaf: 'local function leaf() return 10 end\n',
        outer: '-- @include "leaf"\nlocal function outer() return leaf() end\n',
      },
    );

  it('defines each include once, at the top, and wraps each script in a function named for the code', () => {
    const lib = readLibrary(fixture());
    const version = lib.name.replace('tessera_', '');
    expect(version).toMatch(/^[0-9a-f]{12}$/);
    expect([...lib.functions]).toEqual([
      ['a_first', `a_first_${version}`],
      ['b_second', `b_second_${version}`],
    ]);
    expect(lib.code.match(/local function leaf/g)).toHaveLength(1);
    expect(lib.code).toContain(`redis.register_function('b_second_${version}', function(KEYS, ARGV)`);
    // Other code, another name: two versions can be loaded side by side.
    expect(readLibrary(fixture(2)).name).not.toBe(lib.name);
  });

  it('refuses an include that reads KEYS or ARGV, which only a script function has', () => {
    const dir = luaDir(
      { main: '-- @include "bad"\nreturn bad()\n' },
      { bad: 'local function bad() return ARGV[1] end\n' },
    );
    expect(() => readLibrary(dir)).toThrow('include bad uses KEYS or ARGV');
  });

  it('refuses two includes that define the same name, which would shadow one another', () => {
    const dir = luaDir(
      { a: '-- @include "one"\nreturn f()\n', b: '-- @include "two"\nreturn f()\n' },
      { one: 'local function f() return 1 end\n', two: 'local f = function() return 2 end\n' },
    );
    expect(() => readLibrary(dir)).toThrow('includes one and two both define f');
  });

  it('builds the shipped library', () => {
    const lib = readLibrary();
    expect([...lib.functions.keys()]).toEqual(readScripts().map((s) => s.name));
  });

  describe('on a real Redis', () => {
    let redis: EmbeddedRedis;
    let client: Redis;
    const dir = mkdtempSync(join(tmpdir(), 'tessera-lib-'));
    beforeAll(async () => {
      redis = await startEmbeddedRedis({ dir, persist: false });
      client = new Redis(redis.url);
    });
    afterAll(async () => {
      client.disconnect();
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('loads the shipped library, every script a function', async () => {
      const scripts = new Scripts(client);
      await scripts.load();
      const listed = (await client.call('FUNCTION', 'LIST', 'LIBRARYNAME', scripts.library.name)) as unknown[][];
      expect(listed).toHaveLength(1);
      // A second load (another gateway, a restart) finds the same code there and is no error.
      await scripts.load();
    });

    it('loads the library again when a call finds it gone (a Redis restarted without its data)', async () => {
      const scripts = new Scripts(client, readLibrary(fixture()));
      await scripts.load();
      expect(await scripts.run('b_second', ['k1', 'k2'], [5])).toBe(17);
      await client.call('FUNCTION', 'FLUSH');
      await client.config('RESETSTAT');
      // Calls that find it missing together load it once, and each is answered.
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => scripts.run('b_second', ['k'], [i])));
      expect(answers).toEqual(Array.from({ length: 10 }, (_, i) => 11 + i));
      expect(/cmdstat_function\|load:calls=(\d+)/.exec(await client.info('commandstats'))?.[1]).toBe('1');
    });

    it('a process starting removes the libraries of other versions; one still running loads its own again', async () => {
      const libraries = async (): Promise<string[]> =>
        ((await client.call('FUNCTION', 'LIST')) as unknown[][]).map((lib) => String(lib[1])).sort();
      const loads = async (): Promise<number> =>
        Number(/cmdstat_function\|load:calls=(\d+)/.exec(await client.info('commandstats'))?.[1] ?? 0);
      await client.call('FUNCTION', 'FLUSH');
      const [v1, v2] = [new Scripts(client, readLibrary(fixture(1))), new Scripts(client, readLibrary(fixture(2)))];
      await v1.load({ prune: true });
      await client.call(
        'FUNCTION',
        'LOAD',
        '#!lua name=someone_else\nredis.register_function("x", function() return 1 end)',
      );
      await v2.load({ prune: true });
      // Every deploy used to leave its library behind; another application's stays.
      expect(await libraries()).toEqual([v2.library.name, 'someone_else'].sort());
      await client.config('RESETSTAT');
      expect(await v1.run('a_first', [], [])).toBe(11);
      expect(await v2.run('a_first', [], [])).toBe(12);
      expect(await v1.run('a_first', [], [])).toBe(11);
      // v1 loaded its own once, and left v2's alone: no reload back and forth.
      expect(await loads()).toBe(1);
      expect(await libraries()).toEqual([v1.library.name, v2.library.name, 'someone_else'].sort());
    });

    it('sends the reply of a script that declares `@reply msgpack` packed, and unpacks it, also after a reload', async () => {
      const dir = luaDir(
        {
          packed: '-- @reply msgpack\nreturn { 1, tonumber(ARGV[1]) * 3, "text", { 2, "" }, #KEYS }\n',
          plain: 'return { 1, "text" }\n',
        },
        {},
      );
      const scripts = new Scripts(client, readLibrary(dir));
      expect([...scripts.library.packed]).toEqual(['packed']);
      await scripts.load();
      // Past 2^32 cmsgpack writes a 64-bit integer: it must come back a number, not a BigInt.
      const answer = [1, 3 * 2 ** 40, 'text', [2, ''], 1];
      expect(await scripts.run('packed', ['k'], [2 ** 40])).toEqual(answer);
      const raw = await client.callBuffer('FCALL', scripts.library.functions.get('packed')!, 1, 'k', 2 ** 40);
      expect(Buffer.isBuffer(raw)).toBe(true);
      expect(await scripts.run('plain', [], [])).toEqual([1, 'text']);
      await client.call('FUNCTION', 'FLUSH');
      expect(await scripts.run('packed', ['k'], [2 ** 40])).toEqual(answer);
    });

    it('runs two versions side by side, each calling its own code', async () => {
      const [v1, v2] = [new Scripts(client, readLibrary(fixture(1))), new Scripts(client, readLibrary(fixture(2)))];
      await v1.load();
      await v2.load();
      expect(await v1.run('a_first', [], [])).toBe(11);
      expect(await v2.run('a_first', [], [])).toBe(12);
    });
  });
});
