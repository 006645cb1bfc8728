import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/config';

/**
 * The server secret keys every ID hash: lose it and no ID can be found again.
 * Production sets TESSERA_SECRET; a development checkout gets one generated
 * once into the data directory (mode 0600), shared by the gateway and the CLI.
 */
export function resolveSecret(cfg: Config): Buffer {
  if (cfg.secret) return cfg.secret;
  const file = join(cfg.dataDir, 'secret');
  if (existsSync(file)) return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  mkdirSync(cfg.dataDir, { recursive: true });
  const secret = randomBytes(32);
  writeFileSync(file, secret.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return secret;
}
