import pino, { type Logger } from 'pino';

export function createLogger(level: string, name = 'tessera'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
