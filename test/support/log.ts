/** A logger whose lines a test reads back: for what the gateway must log. */
import pino, { type Logger } from 'pino';

/** One logged line, parsed: pino's level number, its message and its fields. */
export type LogLine = { level: number; msg?: string } & Record<string, unknown>;

export interface LogCapture {
  log: Logger;
  /** Every line logged so far, oldest first. */
  lines: LogLine[];
}

export function captureLog(level = 'info'): LogCapture {
  const lines: LogLine[] = [];
  const log = pino({ level }, { write: (line: string) => lines.push(JSON.parse(line) as LogLine) });
  return { log, lines };
}
