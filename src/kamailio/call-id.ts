/**
 * Tessera call ids from Kamailio dialogs. A SIP dialog is its Call-ID and
 * its tags, and two dialogs may share a Call-ID: a caller reusing one with a
 * new From-tag, or sending its INVITE again after a 484 (overlap dialling,
 * RFC 3578). So a call is named by the Call-ID and the dialog's hash entry
 * and id in Kamailio (`he`, `hi`, carried by every event and listed by
 * dlg.list): `<Call-ID>:<he>.<hi>` when that fits the protocol's call id
 * (1-64 of A-Z a-z 0-9 . _ : @ -), so the call records name the SIP call;
 * hashed otherwise. Every connector of one Kamailio maps a dialog to the
 * same call id, so two connectors side by side share calls.
 */
import { createHash } from 'node:crypto';

const FITS = /^[A-Za-z0-9._:@-]{1,64}$/;

export function callIdOf(sipCallId: string, he: number, hi: number): string {
  // Unambiguous: the suffix is read from the right, and a hashed id has no ':'.
  const named = `${sipCallId}:${he}.${hi}`;
  if (FITS.test(named)) return named;
  return (
    'h-' +
    createHash('sha256')
      .update(JSON.stringify([sipCallId, he, hi]))
      .digest('base64url')
      .slice(0, 43)
  );
}

/** The SIP Call-ID in a call id of callIdOf (undefined for a hashed one): to find a SIP call's record. */
export function sipCallIdOf(call: string): string | undefined {
  return /^(.+):\d+\.\d+$/.exec(call)?.[1];
}
