/**
 * The operator CLI run in-process (src/cli/main.ts runCli) against a test
 * harness: the environment that points it at the harness Redis (same secret,
 * same bucket count, so the gateway and the test see what it writes), and a
 * runner that captures what it writes to stdout and stderr.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vi } from 'vitest';
import { runCli } from '../../src/cli/main';
import { TEST_SECRET, type Harness } from './harness';

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

/** Environment variables to set; undefined takes a variable out. */
export type EnvVars = Record<string, string | undefined>;

/**
 * The environment of a CLI run against the harness: its Redis (no cluster),
 * secret, data dir and bucket count, silent logs, the default ID length; then
 * `extra`.
 */
export function cliEnv(
  h: Pick<Harness, 'dir'> & { redis: { url: string }; cfg: { buckets: number } },
  extra: EnvVars = {},
): EnvVars {
  return {
    REDIS_URL: h.redis.url,
    REDIS_CLUSTER: undefined,
    TESSERA_SECRET: TEST_SECRET,
    DATA_DIR: h.dir,
    BUCKETS: String(h.cfg.buckets),
    LOG_LEVEL: 'silent',
    ID_LENGTH: undefined,
    ...extra,
  };
}

function applyEnv(vars: EnvVars): void {
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
}

/** Sets (and unsets) variables in process.env; returns what puts back the values they had. */
export function setEnv(vars: EnvVars): () => void {
  const saved: EnvVars = {};
  for (const k of Object.keys(vars)) saved[k] = process.env[k];
  applyEnv(vars);
  return () => applyEnv(saved);
}

/** The non-empty lines of what a command wrote. */
export const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

/** Writes a file (input for a command) into the harness's data dir; returns its path. */
export function harnessFile(h: Harness, name: string, text: string): string {
  const p = join(h.dir, name);
  writeFileSync(p, text);
  return p;
}

/** Runs one CLI command in-process with process.env as it is, capturing what it writes to stdout and stderr. */
export async function cli(...args: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const capture = (sink: (s: string) => void) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
      sink(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      cb?.();
      return true;
    }) as typeof process.stdout.write;
  const o = vi.spyOn(process.stdout, 'write').mockImplementation(capture((s) => (out += s)));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation(capture((s) => (err += s)));
  try {
    const code = await runCli(args);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

/** Runs one CLI command in-process against the harness, with cliEnv(h) for this run only. */
export async function runCliIn(h: Parameters<typeof cliEnv>[0], ...args: string[]): Promise<CliRun> {
  const restore = setEnv(cliEnv(h));
  try {
    return await cli(...args);
  } finally {
    restore();
  }
}
