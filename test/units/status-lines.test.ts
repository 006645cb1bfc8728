/**
 * The status line of every answer a refusal reason gets: uWS writes what it is
 * given, so a status without its reason phrase would go out as `410 Status`.
 */
import { describe, expect, it } from 'vitest';
import { statusLine } from '../../src/gateway/http';
import { REASONS } from '../../src/protocol/reasons';

describe('status lines', () => {
  it('every status in the reasons catalogue goes out with its reason phrase', () => {
    const lines = [...new Set(Object.values(REASONS).map((r) => r.status))].sort().map(statusLine);
    for (const line of lines) expect(line).toMatch(/^\d{3} [A-Z][A-Za-z -]+$/);
    expect(lines.filter((l) => l.endsWith(' Status'))).toEqual([]);
  });
});
