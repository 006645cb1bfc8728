/** `tessera call`: a tiny switch client that places one call through the gateway. */
import WebSocket from 'ws';
import { messageOf } from '../../protocol/reasons';
import { intArg, parseOptions, usageError, type Command } from '../command';

export const callCommands: Record<string, Command> = {
  call: {
    summary: 'act as a switch: place one call and print what the gateway says',
    usage:
      '--id ID --dest DIGITS --token SWITCH_TOKEN [--url ws://localhost:$PORT/v1/switch (PORT: 8080 unless set)] [--seconds N] [--json]',
    async run(cli) {
      const { values } = parseOptions(cli, {
        id: { type: 'string' },
        dest: { type: 'string' },
        token: { type: 'string' },
        url: { type: 'string', default: `ws://localhost:${process.env.PORT || 8080}/v1/switch` },
        seconds: { type: 'string', default: '0' },
        json: { type: 'boolean', default: false },
      });
      // Checked before connecting: without them the gateway could only refuse the call.
      for (const [name, v] of [
        ['--id', values.id],
        ['--dest', values.dest],
        ['--token', values.token],
      ] as const)
        if (!v) throw usageError(`${name} is required`);
      return runDemoCall({
        url: values.url,
        token: values.token ?? '',
        id: values.id ?? '',
        dest: values.dest ?? '',
        seconds: intArg(values.seconds, '--seconds'),
        json: values.json ?? false,
        out: cli.out,
        // Refusals and failures on stderr, as every command says them (command.ts outcome()): stdout is the call.
        err: (line) => void process.stderr.write(`${line}\n`),
      });
    },
  },
};

/** Refusals of a stop that pass: Redis failing over, the gateway busy. */
const RESEND = new Set(['unavailable', 'overloaded']);
/** Stops sent, a second apart, before the command gives up and leaves the call to the reaper. */
const STOP_TRIES = 10;

/**
 * A tiny switch for the README tour: starts one call, ticks every second and
 * prints what the gateway answers, until the gateway cuts the call, the
 * requested seconds pass, or Ctrl-C (which stops the call cleanly).
 */
function runDemoCall(o: {
  url: string;
  token: string;
  id: string;
  dest: string;
  seconds: number;
  json: boolean;
  out: (l: string) => void;
  err: (l: string) => void;
}): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(o.url, { headers: { Authorization: `Bearer ${o.token}` } });
    const call = `demo-${Date.now().toString(36)}`;
    let sec = 0;
    let timer: NodeJS.Timeout | undefined;
    let maxSec = 0;
    let stopCause = '';
    let stopTries = 0;
    const send = (m: object): void => ws.send(JSON.stringify(m));
    const stop = (cause: string): void => {
      if (timer) clearInterval(timer);
      timer = undefined;
      stopCause = cause;
      stopTries++;
      send({ op: 'stop', ref: 'stop', call, sec, cause });
    };
    ws.on('unexpected-response', (_req, res) => {
      // Said like a refused start, reason first: the body names it (unauthorized, forbidden, too_many_connections).
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      // 'close', not 'end': a body cut short (a proxy's reset) never ends, and nothing else would
      // settle the promise; the process would exit 0 having said nothing.
      res.on('error', () => undefined);
      res.on('close', () => {
        let reason = 'unknown';
        let message: string | undefined;
        try {
          const e = (JSON.parse(body) as { error?: { reason?: unknown; message?: unknown } }).error;
          if (typeof e?.reason === 'string') reason = e.reason;
          if (typeof e?.message === 'string') message = e.message;
        } catch {
          // Not the gateway's JSON (a proxy's page): the status alone says what happened.
        }
        o.err(
          `refused: ${reason}: ${message ?? messageOf(reason)} (the gateway refused the connection: HTTP ${res.statusCode})`,
        );
        resolve(1);
      });
    });
    ws.on('error', (err) => {
      // Never connected: the 'close' that follows is not the gateway's doing. Most often the
      // gateway is not running, or runs on another PORT than this shell has.
      ws.removeAllListeners('close');
      o.err(`connection failed: ${err.message}`);
      o.err(`is the gateway running at ${o.url}? (set the PORT it was started with, or --url)`);
      resolve(1);
    });
    ws.on('open', () => send({ op: 'start', ref: 'start', call, id: o.id, dest: o.dest }));
    // Closed by the gateway before the call stopped (the token revoked, the gateway shut down):
    // said and counted a failure, the ticking stopped; Tessera reaps the call as stale.
    ws.on('close', (code, reason) => {
      if (timer) clearInterval(timer);
      timer = undefined;
      o.err(`connection closed by the gateway: ${code}${reason.length ? ` ${reason.toString()}` : ''}`);
      resolve(1);
    });
    process.once('SIGINT', () => stop('hangup'));
    ws.on('message', (data) => {
      const body = JSON.parse(Buffer.from(data as Buffer).toString('utf8')) as
        Record<string, unknown> | Record<string, unknown>[];
      const msgs = Array.isArray(body) ? body : [body];
      for (const m of msgs) {
        // A refusal is said on stderr, `refused: <reason>: …`; with --json its raw message stays on stdout too.
        if (o.json) o.out(JSON.stringify(m));
        if (m.op === 'error') o.err(describe(m));
        else if (!o.json) o.out(describe(m));
        if (m.op === 'started') {
          maxSec = Number(m.maxSec);
          timer = setInterval(() => {
            sec++;
            send({ op: 'tick', ref: sec, call, sec });
            if ((o.seconds && sec >= o.seconds) || sec >= maxSec) stop(sec >= maxSec ? 'max_sec' : 'normal');
          }, 1000);
        } else if (m.op === 'cutoff') {
          stop('cutoff');
        } else if (m.op === 'error' && m.ref === 'stop' && RESEND.has(String(m.reason)) && stopTries < STOP_TRIES) {
          // As a switch does: a stop refused for a passing reason is sent again until it is answered.
          setTimeout(() => stop(stopCause), 1000);
        } else if (m.op === 'stopped' || (m.op === 'error' && (m.ref === 'start' || m.ref === 'stop'))) {
          // A stop refused for good (the call unknown: reaped, or its session gone) ends the command too:
          // nothing more would answer it.
          ws.removeAllListeners('close');
          ws.close();
          resolve(m.op === 'stopped' ? 0 : 1);
        }
      }
    });
  });
}

function describe(msg: Record<string, unknown>): string {
  // Fields as the gateway sends them: numbers and short strings.
  const m = msg as Record<string, string | number>;
  switch (m.op) {
    case 'started':
      return `started: may talk ${m.maxSec} s, balance ${m.balance}, rate ${m.rate}/${m.per === undefined ? '' : `${m.per} `}s, fee ${m.fee}`;
    case 'ticked':
      return `  ${String(m.ref).padStart(4)} s  balance ${m.balance}  (${m.secLeft} s left)`;
    case 'alert':
      return `ALERT: ${m.secLeft} s left (threshold ${m.level})`;
    case 'cutoff':
      return `CUT-OFF: ${m.reason}`;
    case 'stopped':
      return `stopped: billed ${m.billedSec} s, cost ${m.cost}, balance ${m.balance}`;
    case 'error': {
      // The gateway's message names only the reason unless it has more to say (a destination's format).
      const generic = typeof m.message !== 'string' || m.message.endsWith(`refused: ${m.reason}`);
      return `refused: ${m.reason}: ${generic ? messageOf(String(m.reason)) : m.message}`;
    }
    default:
      return JSON.stringify(msg);
  }
}
