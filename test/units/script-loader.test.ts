import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readScripts } from '../../src/redis/scripts';

/** A lua/ folder of fixtures: scripts at the top, pieces under includes/. */
function luaDir(scripts: Record<string, string>, includes: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-lua-'));
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
