/**
 * The gateway as a benchmark's child process: the compiled dist/src/main.js,
 * exactly what `npm start` runs after its build (no TypeScript transform in the
 * measured process), on a free port, ready once /readyz answers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../src/redis/embedded';
import { children, keepLogs, ROOT, watchdog } from './process';

/** The built gateway; `npm run bench:*` builds it first. */
export const GATEWAY_MAIN = join(ROOT, 'dist', 'src', 'main.js');

export interface GatewayChild {
  proc: ChildProcess;
  port: number;
  /** The last lines it wrote (empty with `inheritOutput`). */
  logs: string[];
}

export interface GatewayChildOptions {
  redisUrl: string;
  dataDir: string;
  secret: string;
  /** More environment, after the bench's own and before gwEnv. */
  env?: NodeJS.ProcessEnv;
  /** The --gw-env of the bench's command line: last, over everything else. */
  gwEnv?: Record<string, string>;
  /** Variables taken out of the environment (REDIS_CLUSTER always is, unless `cluster` is given). */
  unset?: string[];
  /** REDIS_CLUSTER for the gateway, instead of redisUrl. */
  cluster?: string;
  /** Node flags before the script (--cpu-prof, ...). */
  nodeArgs?: string[];
  /** The gateway's own arguments (`--workers N`). */
  args?: string[];
  /** Also write its stdout and stderr to this file. */
  logFile?: string;
  /** Its stdout and stderr go to ours instead of being kept. */
  inheritOutput?: boolean;
}

/**
 * Connection limits that admit `conns` connections of one token name and a few
 * more (the bench's own probes), where the defaults would not; nothing otherwise.
 * Each connection may have MAX_INFLIGHT (5000) requests in flight, as it would
 * alone: max mode's setup keeps 1,000 starts in flight per connection.
 */
export function connLimits(conns: number): Record<string, string> {
  const need = conns + 8;
  const inflight = need * 5000;
  return {
    ...(need > 100 ? { MAX_CONNECTIONS_PER_TOKEN: String(need) } : {}),
    ...(need > 4000 ? { MAX_CONNECTIONS: String(need) } : {}),
    ...(inflight > 10_000 ? { MAX_INFLIGHT_PER_TOKEN: String(inflight) } : {}),
  };
}

function gatewayEnv(o: GatewayChildOptions, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...(o.cluster ? { REDIS_CLUSTER: o.cluster } : { REDIS_URL: o.redisUrl }),
    PORT: String(port),
    HOST: '127.0.0.1',
    TESSERA_SECRET: o.secret,
    LOG_LEVEL: 'warn',
    DATA_DIR: o.dataDir,
    ...o.env,
    ...o.gwEnv,
  };
  for (const k of [o.cluster ? 'REDIS_URL' : 'REDIS_CLUSTER', ...(o.unset ?? [])]) delete env[k];
  return env;
}

/**
 * Spawns the gateway. A watchdog sends it SIGINT when the bench goes away (even
 * by SIGKILL), so no gateway outlives its benchmark; a graceful exit is also
 * what makes `node --cpu-prof` write its profile.
 */
function spawnGateway(o: GatewayChildOptions, port: number): ChildProcess {
  if (!existsSync(GATEWAY_MAIN))
    throw new Error(`${GATEWAY_MAIN} not found: build first (npm run -s build; npm run bench:* does)`);
  const output = o.inheritOutput ? 'inherit' : 'pipe';
  const proc = spawn(process.execPath, [...(o.nodeArgs ?? []), GATEWAY_MAIN, ...(o.args ?? [])], {
    env: gatewayEnv(o, port),
    stdio: ['ignore', output, output],
  });
  children.add(proc);
  const dog = watchdog(proc.pid, 'INT');
  proc.once('exit', () => dog?.kill('SIGKILL'));
  return proc;
}

function copyOutput(proc: ChildProcess, logFile: string): void {
  const file = createWriteStream(logFile);
  file.on('error', (err) => process.stderr.write(`bench: --gw-log: ${err.message}\n`));
  proc.stdout!.pipe(file, { end: false });
  proc.stderr!.pipe(file, { end: false });
  proc.once('exit', () => setTimeout(() => file.end(), 100));
}

async function waitReady(proc: ChildProcess, port: number, logs: string[]): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`gateway exited (${proc.exitCode ?? proc.signalCode}):\n${logs.join('\n')}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`gateway not ready on ${port} after 20 s:\n${logs.join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts the gateway on a free port (LOG_LEVEL warn) and resolves once /readyz answers 200. */
export async function startGatewayChild(o: GatewayChildOptions): Promise<GatewayChild> {
  const port = await freePort();
  const proc = spawnGateway(o, port);
  const logs = o.inheritOutput ? [] : keepLogs(proc);
  if (o.logFile && !o.inheritOutput) copyOutput(proc, o.logFile);
  await waitReady(proc, port, logs);
  return { proc, port, logs };
}

/** Warning and error lines (pino level 40 and up) among a gateway's kept logs. */
export const warningLines = (logs: string[]): string[] => logs.filter((l) => /"level":(40|50|60)/.test(l));
