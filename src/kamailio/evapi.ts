/**
 * The connector's TCP link to Kamailio's evapi: netstring framing,
 * reconnection, writes gathered per event-loop turn, and the prompt
 * acknowledgement of every read. evapi leaves Nagle on for its client
 * sockets, so an event that gets no reply would hold the next one back
 * until our delayed ACK (tens of ms): a one-byte answer sent soon carries
 * the ACK back.
 *
 * Every write wakes Kamailio's evapi dispatcher, and every message it reads
 * (an ACK too) runs an event route in an evapi worker: the answers of one
 * turn leave in one write, and an ACK waits ACK_DELAY_MS for an answer or
 * another event to share it.
 */
import { connect, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { encodeNetstring, NetstringReader } from './netstring';

const ACK = encodeNetstring('.');
/**
 * How long an ACK waits: an answer written meanwhile carries it instead, and
 * the reads of that millisecond share one. Kamailio holds its next event until
 * then (Nagle), so this is what an event can be delayed by.
 */
const ACK_DELAY_MS = 1;

/**
 * Reconnection: at once-ish, then at most every RETRY_MAX_MS. While no
 * connector is attached Kamailio refuses every prepaid INVITE 503, so the
 * wait after Kamailio is back is all refusals: a back-off doubling to 2 s
 * came back up to 1.5 s after a restart that took Kamailio 1.8 s. A refused
 * connect to evapi (loopback or a private network) costs next to nothing.
 */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 250;
/**
 * The longest close() waits for Kamailio to close its side after ours: it does
 * so as soon as its evapi process reads our end, a few ms.
 */
const LEAVE_MS = 1000;

export interface EvapiOptions {
  host: string;
  port: number;
  log: Logger;
  onMessage: (payload: string) => void;
  /** Called on every (re)connection; `again` after a connection was lost. */
  onConnect?: (again: boolean) => void;
  onDisconnect?: () => void;
}

export class EvapiLink {
  private sock: Socket | undefined;
  private readonly reader = new NetstringReader();
  private closed = false;
  private connectedOnce = false;
  private backoffMs = RETRY_FIRST_MS;
  private retry: NodeJS.Timeout | undefined;
  /** Something was written since the last read: the ACK rides on it. */
  private wrote = false;
  private ack: NodeJS.Timeout | undefined;
  /** This turn's messages, written together once it ends. */
  private out: Buffer[] = [];

  constructor(private readonly o: EvapiOptions) {}

  get connected(): boolean {
    return !this.closed && this.sock !== undefined && !this.sock.connecting && !this.sock.destroyed;
  }

  start(): void {
    this.closed = false;
    this.open();
  }

  /** Sends one message; false when not connected (Kamailio then answers the INVITE itself). */
  send(payload: string): boolean {
    if (!this.connected) return false;
    this.wrote = true;
    if (this.out.push(encodeNetstring(payload)) === 1) process.nextTick(() => this.flush());
    return true;
  }

  /**
   * Leaves Kamailio: our side is closed, and the events Kamailio relays until it reads that are
   * still read and handled; resolved once it has closed its side (it then counts this connector
   * gone, and keeps what no connector hears), LEAVE_MS at most. Destroyed at once, the socket
   * dropped the events of that instant: sent to a connector Kamailio still counted, they were
   * neither heard nor kept.
   */
  close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.ack);
    const s = this.sock;
    if (!s || s.connecting || s.destroyed) {
      s?.destroy();
      this.sock = undefined;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => s.destroy(), LEAVE_MS);
      s.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      s.end();
    });
  }

  private open(): void {
    const s = connect({ host: this.o.host, port: this.o.port, noDelay: true });
    this.sock = s;
    this.reader.reset();
    s.on('connect', () => {
      this.backoffMs = RETRY_FIRST_MS;
      const again = this.connectedOnce;
      this.connectedOnce = true;
      this.o.log.info({ host: this.o.host, port: this.o.port }, 'evapi: connected to Kamailio');
      this.o.onConnect?.(again);
    });
    s.on('data', (chunk: Buffer) => {
      let payloads: string[];
      try {
        payloads = this.reader.push(chunk);
      } catch (err) {
        this.o.log.error({ err }, 'evapi: not a netstring stream; reconnecting');
        s.destroy();
        return;
      }
      this.wrote = false;
      for (const p of payloads) this.o.onMessage(p);
      this.scheduleAck();
    });
    s.on('error', (err) => this.o.log.debug({ err: err.message }, 'evapi: socket error'));
    s.on('close', () => {
      if (this.sock !== s) return;
      this.sock = undefined;
      if (this.connectedOnce) this.o.onDisconnect?.();
      if (this.closed) return;
      // Said once per outage: the tries after it, several a second, at debug.
      const level = this.backoffMs === RETRY_FIRST_MS ? 'warn' : 'debug';
      this.o.log[level]({ retryMs: this.backoffMs }, 'evapi: connection to Kamailio lost; reconnecting');
      this.retry = setTimeout(() => this.open(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, RETRY_MAX_MS);
    });
  }

  /** Writes this turn's messages in one go (nextTick: after the promise callbacks that made them). */
  private flush(): void {
    const out = this.out;
    this.out = [];
    if (out.length === 0 || !this.connected) return;
    this.sock!.write(out.length === 1 ? out[0]! : Buffer.concat(out));
  }

  /** An ACK in ACK_DELAY_MS, unless an answer was written meanwhile. */
  private scheduleAck(): void {
    if (this.ack) return;
    this.ack = setTimeout(() => {
      this.ack = undefined;
      if (!this.wrote && this.connected) this.sock!.write(ACK);
      this.wrote = false;
    }, ACK_DELAY_MS);
  }
}
