/**
 * `npm run bench` (bench/summary.ts) interrupted: the benchmark it runs is
 * stopped so that it cleans up after itself, its temp dir (Redis data) with
 * it, not SIGKILLed with the dir left behind. And a benchmark that fails to
 * run fails the summary, rather than leaving a table of "no figure" and exit 0.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..', '..');

describe('npm run bench interrupted', () => {
  // The benchmarks' temp dirs go to os.tmpdir(): a fresh one shows what is left.
  const tmp = mkdtempSync(join(tmpdir(), 'tessera-summary-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('leaves no temp dir of the running benchmark', async () => {
    const summary = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'summary.ts')], {
      cwd: ROOT,
      env: { ...process.env, TMPDIR: tmp },
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((r) => summary.once('exit', (code) => r(code)));
    // SIGINT to the summary alone (as a CI timeout's SIGTERM would be) once the first benchmark has its Redis.
    const deadline = Date.now() + 30_000;
    const started = (): boolean =>
      readdirSync(tmp).some((d) => d.startsWith('tessera-bench-') && existsSync(join(tmp, d, 'redis')));
    while (!started() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(started()).toBe(true);
    summary.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(readdirSync(tmp).filter((d) => d.startsWith('tessera-bench-'))).toEqual([]);
  }, 60_000);

  it('exits 1 when a benchmark did not run', () => {
    // A PATH with a shell and no redis-server: every benchmark fails at its first step.
    const bin = join(tmp, 'bin');
    mkdirSync(bin);
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'summary.ts')], {
      cwd: ROOT,
      env: { ...process.env, TMPDIR: tmp, PATH: bin },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stdout).toContain('5 of 5 benchmarks failed');
    expect(r.status).toBe(1);
  }, 90_000);
});
