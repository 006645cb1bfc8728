/**
 * Where the secret comes from: TESSERA_SECRET, else an existing
 * DATA_DIR/secret; with the embedded Redis (no REDIS_URL) that file is created
 * on first start, with a shared Redis it never is.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveSecret } from '../../src/app/secret';
import { loadConfig } from '../../src/config/config';

describe('resolveSecret', () => {
  const dirs: string[] = [];
  const tmp = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'tessera-secret-'));
    dirs.push(d);
    return d;
  };
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('with REDIS_URL (or REDIS_CLUSTER), no TESSERA_SECRET and no secret file: refuses, naming TESSERA_SECRET, and writes nothing', () => {
    const dir = tmp();
    const warned: string[] = [];
    const cfg = loadConfig({ DATA_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6399' });
    expect(cfg.secret).toBeUndefined();
    expect(() => resolveSecret(cfg, (m) => warned.push(m))).toThrow(/TESSERA_SECRET/);
    expect(existsSync(join(dir, 'secret'))).toBe(false);
    expect(warned).toEqual([]);

    const cl = loadConfig({ DATA_DIR: dir, REDIS_CLUSTER: '127.0.0.1:7000,127.0.0.1:7001' });
    expect(() => resolveSecret(cl)).toThrow(/TESSERA_SECRET/);
    expect(existsSync(join(dir, 'secret'))).toBe(false);
  });

  it('without REDIS_URL: creates DATA_DIR/secret (mode 0600) once and returns the same secret next time', () => {
    const dir = join(tmp(), 'nested', 'data');
    const cfg = loadConfig({ DATA_DIR: dir });
    const warned: string[] = [];
    const s1 = resolveSecret(cfg, (m) => warned.push(m));
    const file = join(dir, 'secret');
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(s1.length).toBe(32);
    expect(readFileSync(file, 'utf8')).toBe(`${s1.toString('hex')}\n`);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain('TESSERA_SECRET');
    expect(warned[0]).toContain(file);

    const s2 = resolveSecret(loadConfig({ DATA_DIR: dir }), (m) => warned.push(m));
    expect(s2.equals(s1)).toBe(true);
    expect(warned).toHaveLength(1);
  });

  it('an existing secret file is used even with REDIS_URL set; TESSERA_SECRET wins over the file', () => {
    const dir = tmp();
    const hex = 'cd'.repeat(32);
    writeFileSync(join(dir, 'secret'), `${hex}\n`, { mode: 0o600 });
    const s = resolveSecret(loadConfig({ DATA_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6399' }));
    expect(s.toString('hex')).toBe(hex);
    const env = 'ef'.repeat(32);
    expect(
      resolveSecret(loadConfig({ DATA_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6399', TESSERA_SECRET: env })).toString(
        'hex',
      ),
    ).toBe(env);
    expect(readFileSync(join(dir, 'secret'), 'utf8')).toBe(`${hex}\n`);
  });
});
