/** The embedded redis-server does not outlive the process that started it, even one killed with SIGKILL. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startEmbeddedRedis } from '../../src/redis/embedded';
import { until } from '../support/wait';

describe('embedded Redis ends with its parent', () => {
  /** PONG from a raw socket, or false when nothing answers. */
  function ping(port: number, cmd = 'PING'): Promise<boolean> {
    return new Promise((resolveP) => {
      const s = connect({ host: '127.0.0.1', port });
      let buf = '';
      const done = (v: boolean): void => {
        s.destroy();
        resolveP(v);
      };
      s.setTimeout(1000, () => done(false));
      s.on('error', () => done(false));
      s.on('connect', () => s.write(`${cmd}\r\n`));
      s.on('data', (d) => {
        buf += d.toString();
        if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
      });
      s.on('close', () => done(false));
    });
  }

  it('a gateway process killed with SIGKILL takes its redis-server down with it', async () => {
    const root = resolve(__dirname, '..', '..');
    const dir = mkdtempSync(join(tmpdir(), 'tessera-emb-'));
    const script = join(dir, 'parent.ts');
    writeFileSync(
      script,
      [
        `import { startEmbeddedRedis } from ${JSON.stringify(join(root, 'src', 'redis', 'embedded.ts'))};`,
        `void startEmbeddedRedis({ dir: ${JSON.stringify(join(dir, 'redis'))}, persist: false }).then((r) => console.log('PORT ' + r.port));`,
        'setInterval(() => undefined, 1000);',
        '',
      ].join('\n'),
    );
    // node --import tsx runs the script in this very process (the tsx CLI would add a wrapper process).
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let port = 0;
    try {
      let out = '';
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      port = await new Promise<number>((res, rej) => {
        const t = setTimeout(() => rej(new Error(`no port from child: ${out} ${err}`)), 15_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /PORT (\d+)/.exec(out);
          if (m) {
            clearTimeout(t);
            res(Number(m[1]));
          }
        });
        child.once('exit', (code) => {
          clearTimeout(t);
          rej(new Error(`child exited ${code}: ${err}`));
        });
      });
      expect(await ping(port)).toBe(true);

      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      expect(child.kill('SIGKILL')).toBe(true);
      await exited;
      await until(async () => !(await ping(port)), 5000, 50);
      expect(await ping(port)).toBe(false);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      // Should the watchdog have failed, do not leave the orphan running.
      if (port && (await ping(port))) await ping(port, 'SHUTDOWN NOSAVE');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('its child process is redis-server itself: killing it stops Redis, from the moment it is spawned', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-emb-'));
    let spawned: ChildProcess | undefined;
    const redis = await startEmbeddedRedis({ dir: join(dir, 'redis'), persist: false, onSpawn: (p) => (spawned = p) });
    try {
      // A bench interrupted while Redis boots kills what it was handed and waits for it before
      // removing Redis' directory: that must be the server, not a shell that leaves it running.
      const exited = new Promise<void>((r) => redis.process.once('exit', () => r()));
      redis.process.kill('SIGKILL');
      await exited;
      expect(await ping(redis.port)).toBe(false);
      expect(spawned).toBe(redis.process);
    } finally {
      if (await ping(redis.port)) await ping(redis.port, 'SHUTDOWN NOSAVE');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
