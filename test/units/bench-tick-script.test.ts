/**
 * `npm run bench:tick-script -- --keep`: like every benchmark, it says where
 * it kept its temp dir before the final JSON line, so that the last line stays
 * the JSON a script reads (docs/benchmarks.md).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..', '..');

describe('bench:tick-script --keep', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tessera-tick-script-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('prints "kept DIR" before the JSON line, which stays last', () => {
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'bench', 'tick-script.ts'), '--calls', '200', '--rounds', '1', '--keep'],
      { cwd: ROOT, env: { ...process.env, TMPDIR: tmp }, encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const kept = readdirSync(tmp).filter((d) => d.startsWith('tessera-bench-tick-'));
    expect(kept).toHaveLength(1);
    expect(lines.at(-2)).toBe(`kept ${join(tmp, kept[0]!)}`);
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ bench: 'tick-script' });
  }, 60_000);
});
