/** A logger whose lines a test reads back: for what the gateway must log. */
import pino, { type Logger } from 'pino';

/** One logged line, parsed: pino's level number, its message and its fields. */
export type LogLine = { level: number; msg?: string } & Record<string, unknown>;

export interface LogCapture {
  log: Logger;
  /** Every line logged so far, oldest first. */
  lines: LogLine[];
}

/** `onLine`: called with each line as it is logged, for a test that must act at that moment. */
export function captureLog(level = 'info', onLine?: (line: LogLine) => void): LogCapture {
  const lines: LogLine[] = [];
  const write = (text: string): void => {
    const line = JSON.parse(text) as LogLine;
    lines.push(line);
    onLine?.(line);
  };
  const log = pino({ level }, { write });
  return { log, lines };
}
