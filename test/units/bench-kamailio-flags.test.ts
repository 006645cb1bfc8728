/**
 * `npm run bench:kamailio` refuses a command line it cannot run as asked: a
 * mistyped mode measured nothing and a mistyped rate printed NaN rows, both
 * ending with exit 0 as if the run had been made. It keeps its temp dir with
 * --keep, as every benchmark does, and still with --keep-tmp, its old name.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..', '..');

const run = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'kamailio.ts'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 20_000,
  });

describe('bench:kamailio flags', () => {
  it.each([
    [['--mode', 'rates'], '--mode'],
    [['--mode', 'rate', '--rates', '500,1k'], '--rates'],
    [['--step-sec', '3s'], '--step-sec'],
    [['--hold-sec', '0'], '--hold-sec'],
  ])('%j fails naming %s', (args, flag) => {
    const r = run(...args);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`bench: Error: ${flag}:`);
  });

  it.each([['--keep'], ['--keep-tmp']])('takes %s', (flag) => {
    // A bad mode after it: the flags were parsed, and nothing runs.
    const r = run(flag, '--mode', 'rates');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('bench: Error: --mode:');
  });
});
