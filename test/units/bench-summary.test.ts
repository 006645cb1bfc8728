/**
 * `npm run bench` (bench/summary.ts) interrupted: the benchmark it runs is
 * stopped so that it cleans up after itself, its temp dir (Redis data) with
 * it, not SIGKILLed with the dir left behind.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
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
});
