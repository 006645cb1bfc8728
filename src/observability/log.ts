import pino, { type Logger } from 'pino';

/**
 * `fd`: where the JSON lines go: stdout (1, written asynchronously: a slow log
 * pipe must not stall the event loop) for the services; the CLI passes stderr
 * (2, written at once), since its stdout is its output (an export, the IDs a
 * mint made) and it exits when done.
 */
export function createLogger(level: string, name = 'tessera', fd: 1 | 2 = 1): Logger {
  const options = { name, level, base: { pid: process.pid } };
  return fd === 1 ? pino(options) : pino(options, pino.destination({ dest: 2, sync: true }));
}
