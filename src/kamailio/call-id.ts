/**
 * Tessera call ids from SIP Call-IDs. A Call-ID that already fits the
 * protocol's call id (1-64 of A-Z a-z 0-9 . _ : @ -) is used as it is, so the
 * call records name the SIP call; any other is hashed. Every connector maps a
 * Call-ID to the same call id, so two connectors side by side share calls.
 */
import { createHash } from 'node:crypto';

const FITS = /^[A-Za-z0-9._:@-]{1,64}$/;

export function callIdOf(sipCallId: string): string {
  if (FITS.test(sipCallId)) return sipCallId;
  return 'h-' + createHash('sha256').update(sipCallId).digest('base64url').slice(0, 43);
}
