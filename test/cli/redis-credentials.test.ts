/**
 * A Redis password that is wrong or missing is a configuration error: the CLI and the
 * gateway say so at once and exit 2 (which systemd's RestartPreventExitStatus=2 does not
 * restart), instead of waiting out their Redis timeout and failing as if Redis were away.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/config';
import { startGateway } from '../../src/gateway/server';
import { createLogger } from '../../src/observability/log';
import { cli, cliEnv, setEnv } from '../support/cli';
import { startHarness, type Harness } from '../support/harness';

const PASSWORD = 'right-horse-battery-staple';

let h: Harness;
let restoreEnv: (() => void) | undefined;
const withPassword = (password: string | undefined): string => {
  const u = new URL(h.redis.url);
  u.password = password ?? '';
  return u.toString();
};

beforeAll(async () => {
  h = await startHarness();
  // Connections already open stay authenticated; every new one needs the password.
  await h.r.config('SET', 'requirepass', PASSWORD);
  restoreEnv = setEnv(cliEnv(h));
});
afterAll(async () => {
  restoreEnv?.();
  await h?.r.config('SET', 'requirepass', '');
  await h?.stop();
});

describe('Redis credentials', () => {
  it.each([
    ['a wrong password', 'not-the-password'],
    ['no password', undefined],
  ])('the CLI with %s says the credentials were refused, exit 2', async (_what, password) => {
    const restore = setEnv({ REDIS_URL: withPassword(password) });
    try {
      const run = await cli('token-list');
      expect(run.code).toBe(2);
      expect(run.err).toMatch(/^tessera token-list: Redis refused the credentials \((WRONGPASS|NOAUTH)/);
      expect(run.err).toContain('REDIS_URL');
    } finally {
      restore();
    }
  });

  it('the CLI with the right password works', async () => {
    const restore = setEnv({ REDIS_URL: withPassword(PASSWORD) });
    try {
      const run = await cli('token-list');
      expect(run).toMatchObject({ code: 0, err: '' });
    } finally {
      restore();
    }
  });

  it('a gateway with a wrong password refuses to start with a configuration error', async () => {
    const url = withPassword('not-the-password');
    const start = startGateway({ ...h.cfg, redis: { ...h.cfg.redis, url } }, createLogger('silent'), url);
    const err = await start.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^Redis refused the credentials \(WRONGPASS/);
  });

  it('a gateway whose Redis user may not run a command it needs refuses to start with a configuration error', async () => {
    // An ACL user without FUNCTION. Until 2026-12-08 (ffbeeed) the start took it for a Redis not
    // ready yet: it waited out its 10 s and failed as if Redis were away (exit 1, restarted for ever).
    await h.r.acl('SETUSER', 'nofunc', 'on', '>nofunc-pw', '~*', '&*', '+@all', '-function');
    try {
      const u = new URL(h.redis.url);
      u.username = 'nofunc';
      u.password = 'nofunc-pw';
      const url = u.toString();
      const start = startGateway({ ...h.cfg, redis: { ...h.cfg.redis, url } }, createLogger('silent'), url);
      const err = await start.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(/^Redis refused a command Tessera needs \(NOPERM/);
    } finally {
      await h.r.acl('DELUSER', 'nofunc');
    }
  });
});
