/**
 * SIP ports for the Kamailio tests (freeSipPort in test/kamailio/stack.ts):
 * sipp and Kamailio bind UDP, so a port another process holds on UDP must
 * never be handed out, nor one port twice.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterAll, describe, expect, it } from 'vitest';
import { freeSipPort } from '../kamailio/stack';

const held: Socket[] = [];
afterAll(() => {
  for (const s of held) s.close();
});

/** A UDP socket on a port the kernel picks, as a running sipp holds one. */
function holdUdp(): Promise<number> {
  const s = createSocket('udp4');
  held.push(s);
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => resolve(s.address().port));
  });
}

describe('freeSipPort', () => {
  it('never hands out a port held on UDP, nor the same port twice', async () => {
    // 500 held ports are about 2% of the ephemeral range: a TCP-only check hits one
    // in 300 draws with a probability above 99%.
    const taken = new Set<number>();
    for (let i = 0; i < 500; i++) taken.add(await holdUdp());
    const given = new Set<number>();
    for (let i = 0; i < 300; i++) {
      const port = await freeSipPort();
      expect(taken.has(port), `port ${port} is held on UDP`).toBe(false);
      expect(given.has(port), `port ${port} was given before`).toBe(false);
      given.add(port);
    }
  });
});
