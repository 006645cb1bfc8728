/** Call records and IDs for the Kamailio tests. */
import { sipCallIdOf } from '../../src/kamailio/call-id';
import { exportRecords } from '../../src/ledger/export';
import type { Harness } from '../support/harness';
import { until } from './stack';

/** The call detail records (all, or those of one SIP Call-ID's dialogs), as the export writes them. */
export async function callRecords(h: Harness, ci?: string): Promise<Record<string, string>[]> {
  const rows: Record<string, string>[] = [];
  await exportRecords(h.ctx, 'calls', 'ndjson', (s) => {
    for (const line of s.split('\n')) if (line) rows.push(JSON.parse(line) as Record<string, string>);
  });
  return ci !== undefined ? rows.filter((r) => r.call !== undefined && sipCallIdOf(r.call) === ci) : rows;
}

/** The record of one SIP call (its first dialog's), once the stop has written it. */
export function recordOf(h: Harness, ci: string, timeoutMs?: number): Promise<Record<string, string>> {
  return until(`the record of ${ci}`, async () => (await callRecords(h, ci))[0], timeoutMs);
}

/** `body` with its Luhn check digit: a well-formed ID that no one minted. */
export function luhnId(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let d = Number(body[body.length - 1 - i]);
    if (i % 2 === 0) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return body + String((10 - (sum % 10)) % 10);
}
