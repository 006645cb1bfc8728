import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, type Config } from '../config/config';

/**
 * The server secret keys every ID hash: lose it and no ID can be found again.
 * Production sets TESSERA_SECRET; a development checkout gets one generated
 * once into the data directory (mode 0600), shared by the gateway and the CLI.
 */
export function resolveSecret(cfg: Config, warn: (msg: string) => void = () => undefined): Buffer {
  if (cfg.secret) return cfg.secret;
  const file = join(cfg.dataDir, 'secret');
  if (existsSync(file)) return Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  // A new secret beside a Redis that already holds IDs would make every one of them unfindable.
  if (cfg.redis.url || cfg.redis.cluster) {
    throw new ConfigError(
      `TESSERA_SECRET is not set and ${file} does not exist: set the secret this Redis's IDs were minted with`,
    );
  }
  warn(`TESSERA_SECRET not set: generated a development secret in ${file}; back it up, IDs cannot be found without it`);
  mkdirSync(cfg.dataDir, { recursive: true });
  const secret = randomBytes(32);
  writeFileSync(file, secret.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return secret;
}
