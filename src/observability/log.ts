import pino, { type Logger } from 'pino';

/**
 * `fd`: where the JSON lines go: stdout (1) for the services; the CLI passes
 * stderr (2), since its stdout is its output (an export, the IDs a mint made).
 */
export function createLogger(level: string, name = 'tessera', fd: 1 | 2 = 1): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ dest: fd, sync: true }));
}
