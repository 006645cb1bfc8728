/**
 * `npm run bench:soak -- --ack-cost` runs no soak (no faults, its own loops):
 * its first line says so instead of the soak's rates and fault interval.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..', '..');

describe('bench:soak --ack-cost', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'tessera-soak-header-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('names what it measures in its first line, not faults it does not inject', async () => {
    const soak = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'soak.ts'), '--ack-cost'], {
      cwd: ROOT,
      env: { ...process.env, TMPDIR: tmp },
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const exited = new Promise<void>((r) => soak.once('exit', () => r()));
    let out = '';
    await new Promise<void>((resolve) => {
      soak.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve();
      });
      soak.once('exit', () => resolve());
    });
    soak.kill('SIGINT'); // it cleans up its cluster and temp dir
    await exited;
    const first = out.split('\n')[0]!;
    expect(first).toMatch(/^tessera bench:soak --ack-cost/);
    expect(first).not.toMatch(/faults=every/);
  }, 60_000);
});
