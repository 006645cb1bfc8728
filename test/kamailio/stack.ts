/**
 * Kamailio, sipp and the connector as a test's child processes, on free
 * loopback ports: Kamailio runs deploy/kamailio/kamailio.cfg as shipped (only
 * its -A defines change), sipp runs the scenarios of test/kamailio/sipp/.
 * Every process started here is killed by `stopAll` (and Kamailio with its
 * whole process group).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { KamailioConnector } from '../../src/kamailio/connector';
import { NetstringReader } from '../../src/kamailio/netstring';
import { createLogger } from '../../src/observability/log';
import { freePort, tcpPortFree } from '../../src/redis/embedded';
import { sleep, until as waitUntil } from '../support/wait';

const ROOT = join(__dirname, '..', '..');
export const KAMAILIO_CFG = join(ROOT, 'deploy', 'kamailio', 'kamailio.cfg');
const DIALOG_DB = join(ROOT, 'deploy', 'kamailio', 'dialog-db.sh');
const SCENARIOS = join(__dirname, 'sipp');
const TASKSET = '/usr/bin/taskset';

export const haveKamailio = (): boolean => existsSync('/usr/sbin/kamailio') && existsSync('/usr/bin/sipp');

const started = new Set<ChildProcess>();

/**
 * Keeps a process (a detached group leader) to kill at the end, and kills its
 * whole group if this process dies first, even by SIGKILL: a shell holding our
 * stdin pipe does it on EOF.
 */
function track(p: ChildProcess): ChildProcess {
  started.add(p);
  const dog = p.pid
    ? spawn('sh', ['-c', `read _ || true; kill -KILL -${p.pid} 2>/dev/null`], { stdio: ['pipe', 'ignore', 'ignore'] })
    : undefined;
  dog?.on('error', () => undefined);
  p.once('exit', () => {
    started.delete(p);
    dog?.kill('SIGKILL');
  });
  return p;
}

function killTree(p: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (p.exitCode !== null || p.signalCode !== null || p.pid === undefined) return;
  try {
    process.kill(-p.pid, signal);
  } catch {
    p.kill(signal);
  }
}

const exited = (p: ChildProcess): Promise<void> =>
  p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));

/** Kills every process this module started. */
export async function stopAll(): Promise<void> {
  const all = [...started];
  for (const p of all) killTree(p);
  await Promise.all(all.map(exited));
}

export { sleep };

/** The support library's `until`, answering the value that satisfied it (a dialog, a record...). */
export async function until<T>(what: string, check: () => T | Promise<T>, timeoutMs = 10_000): Promise<NonNullable<T>> {
  let found: T | undefined;
  await waitUntil(async () => Boolean((found = await check())), timeoutMs, 50, what);
  return found as NonNullable<T>;
}

export interface KamailioChild {
  proc: ChildProcess;
  sipPort: number;
  evapiPort: number;
  httpPort: number;
  rpcUrl: string;
  logs: string[];
  rpc(method: string, params?: unknown[], id?: number | string): Promise<any>;
  /** SIGTERM to every process, as systemd stops it: Kamailio writes its dialogs for the next start. */
  stop(): Promise<void>;
  /** SIGKILL: a crash, whose dialogs are lost. */
  crash(): Promise<void>;
}

export interface KamailioPorts {
  sipPort: number;
  evapiPort: number;
  httpPort: number;
}

const sipPortsGiven = new Set<number>();

/**
 * A loopback port for SIP. sipp and Kamailio bind UDP, which freePort (a TCP
 * listener's port) says nothing about: a port another sipp holds on UDP could
 * come back from it. The kernel picks this one among ports free on UDP; it must
 * be free on TCP too, and it is never given twice by this process (the first
 * taker may not have bound it yet).
 */
export async function freeSipPort(): Promise<number> {
  for (;;) {
    const sock = createSocket('udp4');
    const port = await new Promise<number>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, '127.0.0.1', () => resolve(sock.address().port));
    });
    await new Promise<void>((resolve) => sock.close(() => resolve()));
    if (sipPortsGiven.has(port) || !(await tcpPortFree(port))) continue;
    sipPortsGiven.add(port);
    return port;
  }
}

/** A final answer to an INVITE, as `sipInvite` read it. */
export interface SipAnswer {
  code: number;
  /** The answer's headers: the first value of each, by any case of its name. */
  headers: Pick<SipMessage, 'get'>;
  /** An answered call: when its 200 OK came and when its BYE left (gettimeofday, µs). */
  answerUs?: number;
  hangupUs?: number;
  /** When the network's BYE came (`awaitBye`). */
  byeUs?: number;
}

export interface SipInviteOptions {
  /** More header lines. */
  extra?: string[];
  /** The request URI's parameters, after its host and port (`;user=phone`). */
  uriParams?: string;
  /** The INVITE's Call-ID, From-tag and CSeq number: fresh ones (and 1) by default. */
  callId?: string;
  fromTag?: string;
  cseq?: number;
  /** CANCEL the INVITE once Kamailio's 100 came. */
  cancel?: boolean;
  /** An answered call talks this long, then hangs up (BYE). */
  talkMs?: number;
  /** An answered call waits for the network's BYE (a cut-off) instead, up to `talkMs`, and answers it. */
  awaitBye?: boolean;
  /** How the requests' text becomes bytes: `latin1` writes each character as one byte, for bytes that are no UTF-8. */
  encoding?: 'utf8' | 'latin1';
  /** Sends the INVITE again, as a UAC over UDP does (RFC 3261 timer A: 500 ms, doubling), until any answer comes. */
  retransmit?: boolean;
  /**
   * With `retransmit`: the first one goes 500 ms after this settles, not after the INVITE, so that
   * it comes after an event of the test's, however loaded the machine is.
   */
  retransmitAfter?: Promise<unknown>;
}

const nowUs = (): number => Math.round((performance.timeOrigin + performance.now()) * 1000);

/**
 * One INVITE over UDP by hand, for what sipp cannot do or its log does not
 * show: a Call-ID of the test's choice (sipp makes its own, one per call), a
 * CANCEL while Kamailio asks the connector, the final answer's headers
 * (X-Prepaid-Reason). A refusal is acknowledged (ACK), so Kamailio does not
 * resend it; an answered call is acknowledged and hung up after `talkMs`.
 */
export async function sipInvite(k: { sipPort: number }, ruser: string, o: SipInviteOptions = {}): Promise<SipAnswer> {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()));
  const port = sock.address().port;
  const n = Math.random().toString(36).slice(2);
  const cseq = o.cseq ?? 1;
  const ruri = `sip:${ruser}@127.0.0.1:${k.sipPort}${o.uriParams ?? ''}`;
  const via = (branch: string): string => `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-${branch}`;
  const common = [
    `From: <sip:caller@127.0.0.1:${port}>;tag=${o.fromTag ?? n}`,
    `Call-ID: ${o.callId ?? `${n}@127.0.0.1`}`,
  ];
  const send = (lines: string[]): Promise<void> =>
    new Promise((resolve) =>
      sock.send(
        Buffer.from([...lines, 'Content-Length: 0', '', ''].join('\r\n'), o.encoding ?? 'utf8'),
        k.sipPort,
        '127.0.0.1',
        () => resolve(),
      ),
    );
  const invite = [
    `INVITE ${ruri} SIP/2.0`,
    via(n),
    'Max-Forwards: 70',
    ...common,
    `To: <${ruri}>`,
    `CSeq: ${cseq} INVITE`,
    `Contact: <sip:caller@127.0.0.1:${port}>`,
    ...(o.extra ?? []),
  ];
  let resend: NodeJS.Timeout | undefined;
  // An answer to the INVITE (or the end of this call) stops the retransmissions, even those to come.
  let heard = false;
  try {
    return await new Promise<SipAnswer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no final answer to INVITE ${ruser}`)), 10_000 + (o.talkMs ?? 0));
      let answer: SipAnswer | undefined;
      let cancelled = false;
      const again = (ms: number): void => {
        if (heard) return;
        resend = setTimeout(() => {
          void send(invite);
          again(ms * 2);
        }, ms);
      };
      if (o.retransmit) void (o.retransmitAfter ?? Promise.resolve()).then(() => again(500));
      sock.on('message', (buf) => {
        const msg = parseSip(buf.toString());
        const { code, method } = msg;
        if (method === 'INVITE') {
          heard = true;
          clearTimeout(resend);
        }
        if (method === 'BYE' && code === 0 && o.awaitBye && answer) {
          answer.byeUs = nowUs();
          sock.send(
            Buffer.from([...responseTo(msg, '200 OK'), 'Content-Length: 0', '', ''].join('\r\n')),
            k.sipPort,
            '127.0.0.1',
          );
          clearTimeout(timer);
          resolve(answer);
        }
        if (method === 'BYE' && code >= 200 && answer) {
          clearTimeout(timer);
          resolve(answer);
        }
        if (method !== 'INVITE') return;
        if (code === 100 && o.cancel && !cancelled) {
          cancelled = true;
          void send([
            `CANCEL ${ruri} SIP/2.0`,
            via(n),
            'Max-Forwards: 70',
            ...common,
            `To: <${ruri}>`,
            `CSeq: ${cseq} CANCEL`,
          ]);
        }
        if (!(code >= 200)) return;
        const to = `To: ${msg.get('to') ?? `<${ruri}>`}`;
        if (code >= 300) {
          void send([`ACK ${ruri} SIP/2.0`, via(n), 'Max-Forwards: 70', ...common, to, `CSeq: ${cseq} ACK`]);
          clearTimeout(timer);
          resolve({ code, headers: msg });
          return;
        }
        // Answered: ACK (again, for a 200 OK resent), then BYE after talkMs, both along the route set.
        const target = /<([^>]+)>/.exec(msg.get('contact') ?? '')?.[1] ?? ruri;
        const inDialog = (m: string, branch: string, seq: number): string[] => [
          `${m} ${target} SIP/2.0`,
          via(branch),
          'Max-Forwards: 70',
          ...msg
            .all('record-route')
            .reverse()
            .map((r) => `Route: ${r}`),
          ...common,
          to,
          `CSeq: ${seq} ${m}`,
        ];
        void send(inDialog('ACK', `${n}-ack`, cseq));
        if (answer) return;
        answer = { code, headers: msg, answerUs: nowUs() };
        if (o.awaitBye) return;
        setTimeout(() => {
          answer!.hangupUs = nowUs();
          void send(inDialog('BYE', `${n}-bye`, cseq + 1));
        }, o.talkMs ?? 0);
      });
      void send(invite);
    });
  } finally {
    heard = true;
    clearTimeout(resend);
    sock.close();
  }
}

/** A SIP message as a `SipSocket` received it. */
export interface SipMessage {
  /** The request or status line. */
  first: string;
  /** A response's status code; 0 for a request. */
  code: number;
  /** A request's method, or the method of the request a response answers. */
  method: string;
  /** Every value of a header (by any case of its name), in order. */
  all(name: string): string[];
  get(name: string): string | undefined;
}

/**
 * A SIP endpoint on loopback, over UDP, written by hand: for requests inside
 * a dialog that no sipp scenario sends. `onRequest` answers what it receives.
 */
export interface SipSocket {
  port: number;
  /** Every message received, in order. */
  received: SipMessage[];
  onRequest?: (m: SipMessage) => void;
  send(lines: string[], port: number): void;
  /** The first message received, or to come, that `match` accepts. */
  next(what: string, match: (m: SipMessage) => boolean): Promise<SipMessage>;
  close(): void;
}

export function parseSip(text: string): SipMessage {
  const [first = '', ...lines] = text.split('\r\n');
  const headers: [string, string][] = [];
  for (const line of lines) {
    if (line === '') break;
    const at = line.indexOf(':');
    if (at > 0) headers.push([line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim()]);
  }
  const all = (name: string): string[] => headers.filter(([n]) => n === name.toLowerCase()).map(([, v]) => v);
  const code = Number(/^SIP\/2\.0 (\d{3})/.exec(first)?.[1] ?? 0);
  const method = code ? (all('cseq')[0]?.split(' ')[1] ?? '') : (first.split(' ')[0] ?? '');
  return { first, code, method, all, get: (name) => all(name)[0] };
}

/** `host`: the loopback address it sends from (another than 127.0.0.1 tells it from the others by address). */
export async function sipSocket(host = '127.0.0.1'): Promise<SipSocket> {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, host, () => resolve()));
  const self: SipSocket = {
    port: sock.address().port,
    received: [],
    send: (lines, port) => sock.send([...lines, 'Content-Length: 0', '', ''].join('\r\n'), port, '127.0.0.1'),
    next: (what, match) => until(what, () => self.received.find(match)),
    close: () => sock.close(),
  };
  sock.on('message', (buf) => {
    const m = parseSip(buf.toString());
    self.received.push(m);
    if (m.code === 0) self.onRequest?.(m);
  });
  return self;
}

/** The lines of a response to `req` (its Vias, From, To, Call-ID and CSeq), with `extra` lines after them. */
export function responseTo(req: SipMessage, status: string, extra: string[] = [], toTag?: string): string[] {
  const to = req.get('to') ?? '';
  return [
    `SIP/2.0 ${status}`,
    ...req.all('via').map((v) => `Via: ${v}`),
    `From: ${req.get('from') ?? ''}`,
    `To: ${toTag !== undefined && !/;tag=/.test(to) ? `${to};tag=${toTag}` : to}`,
    `Call-ID: ${req.get('call-id') ?? ''}`,
    `CSeq: ${req.get('cseq') ?? ''}`,
    ...extra,
  ];
}

/**
 * The PSTN gateway's (`pstn`'s) response to a request Kamailio relayed to it: its Record-Route
 * kept and a Contact of its own, so the dialog's later requests find their way back through Kamailio.
 */
export function replyAsGateway(pstn: SipSocket, sipPort: number, m: SipMessage, status: string): void {
  const extra = [...m.all('record-route').map((r) => `Record-Route: ${r}`), `Contact: <sip:gw@127.0.0.1:${pstn.port}>`];
  pstn.send(responseTo(m, status, extra, 'gw'), sipPort);
}

export const kamailioPorts = async (): Promise<KamailioPorts> => ({
  sipPort: await freeSipPort(),
  evapiPort: await freePort(),
  httpPort: await freePort(),
});

export function rpcCall(url: string, method: string, params: unknown[] = [], id: number | string = 1): Promise<any> {
  const body = JSON.stringify({ jsonrpc: '2.0', method, params, id });
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/json' }, timeout: 2000 },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Kamailio with the shipped configuration, routing answered prepaid calls to the sipp callee on `pstnPort`. */
export async function startKamailio(o: {
  dir: string;
  pstnPort: number;
  ports?: KamailioPorts;
  defines?: string[];
  /** Shared memory (MB): dialogs and transactions live there. */
  shmMb?: number;
  /** SIP worker processes. */
  children?: number;
  /** The SIP socket's transport (`SIP_LISTEN`): UDP by default. */
  sipProto?: 'udp' | 'tcp';
  /**
   * Runs every Kamailio process on these CPUs only (taskset's list, "0"):
   * a packet that wakes one of its processes then preempts another mid-work,
   * which is how races between them show (ignored without taskset).
   */
  cpus?: string;
}): Promise<KamailioChild> {
  const ports = o.ports ?? (await kamailioPorts());
  // Where this Kamailio keeps its dialogs over a restart: in `dir`, so a restart on the same dir finds them.
  const db = join(o.dir, 'db');
  execFileSync('sh', [DIALOG_DB, db]);
  // -x tlsf: the memory manager docs/switches.md tells operators to run (deploy/kamailio/kamailio.service.d).
  // prettier-ignore
  const args = [
    '-f', KAMAILIO_CFG, '-DD', '-E', '-m', String(o.shmMb ?? 64), '-M', '8', '-x', 'tlsf', '-Y', o.dir, '-P', join(o.dir, `kamailio-${ports.sipPort}.pid`),
    '-A', `SIP_LISTEN=${o.sipProto ?? 'udp'}:127.0.0.1:${ports.sipPort}`,
    '-A', `HTTP_LISTEN=tcp:127.0.0.1:${ports.httpPort}`,
    '-A', `EVAPI_BIND="127.0.0.1:${ports.evapiPort}"`,
    '-A', `PSTN_GW="sip:127.0.0.1:${o.pstnPort}"`,
    '-A', `CHILDREN=${o.children ?? 2}`,
    '-A', `DB_URL="text://${db}"`,
    ...(o.defines ?? []).flatMap((d) => ['-A', d]),
  ];
  const [cmd, argv] =
    o.cpus !== undefined && existsSync(TASKSET) ? [TASKSET, ['-c', o.cpus, 'kamailio', ...args]] : ['kamailio', args];
  const proc = track(spawn(cmd, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] }));
  const logs: string[] = [];
  const keep = (d: Buffer): void => {
    logs.push(...d.toString().split('\n').filter(Boolean));
    if (logs.length > 500) logs.splice(0, logs.length - 500);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const rpcUrl = `http://127.0.0.1:${ports.httpPort}/RPC`;
  try {
    await until('Kamailio to answer RPC', async () => {
      if (proc.exitCode !== null) throw new Error(`kamailio exited: ${logs.slice(-10).join('\n')}`);
      return rpcCall(rpcUrl, 'core.version').then(
        (r) => r.result !== undefined,
        () => false,
      );
    });
  } catch (err) {
    killTree(proc);
    throw err;
  }
  // Up, its tables read: as the drop-in's ExecStartPost, what tells a crash at the next start.
  execFileSync('sh', [DIALOG_DB, '--started', db]);
  return {
    proc,
    ...ports,
    rpcUrl,
    logs,
    rpc: (m, p, id) => rpcCall(rpcUrl, m, p, id),
    async stop() {
      killTree(proc, 'SIGTERM');
      const t = setTimeout(() => killTree(proc), 3000);
      await exited(proc);
      clearTimeout(t);
    },
    async crash() {
      killTree(proc);
      await exited(proc);
    },
  };
}

/** A connector in this process, attached to `k` (Kamailio counts it) before this returns. */
export async function attachConnector(k: KamailioChild, gateways: string[], token: string): Promise<KamailioConnector> {
  const c = new KamailioConnector({
    evapiHost: '127.0.0.1',
    evapiPort: k.evapiPort,
    rpcUrl: k.rpcUrl,
    gateways,
    token,
    log: createLogger('silent'),
  });
  const before = await connectorsAttached(k);
  c.start();
  await until('the connector to attach', async () => (await connectorsAttached(k)) > before);
  return c;
}

/** An evapi client that only listens: every event Kamailio relays (to every client). */
export interface EvapiListener {
  /** The events that parsed as JSON. */
  events: Record<string, unknown>[];
  /** Those that did not, as written. */
  unparsed: string[];
  close(): void;
}

/** Attaches an `EvapiListener` to Kamailio (it counts as a connector there, and answers nothing). */
export async function listenEvents(k: KamailioChild): Promise<EvapiListener> {
  const events: Record<string, unknown>[] = [];
  const unparsed: string[] = [];
  const reader = new NetstringReader();
  const before = await connectorsAttached(k);
  const sock = connect(k.evapiPort, '127.0.0.1');
  sock.on('data', (chunk: Buffer) => {
    for (const payload of reader.push(chunk)) {
      try {
        events.push(JSON.parse(payload) as Record<string, unknown>);
      } catch {
        unparsed.push(payload);
      }
    }
  });
  sock.on('error', () => undefined);
  await until('the listener to attach', async () => (await connectorsAttached(k)) > before);
  return { events, unparsed, close: () => sock.destroy() };
}

/** How many connectors Kamailio counts as attached. */
export async function connectorsAttached(k: KamailioChild): Promise<number> {
  const r = await k.rpc('pv.shvGet', ['connectors']);
  const v = Array.isArray(r.result) ? r.result[0]?.value : r.result?.value;
  return Number(v ?? 0);
}

/** A dialog's fail-safe as Kamailio holds it (dlg.list): when it was answered and when its timeout falls, Unix seconds. */
export interface DialogTimes {
  ci: string;
  startTs: number;
  timeout: number;
}

/** Kamailio's answered dialogs, with their timeouts. */
export async function answeredDialogs(k: KamailioChild): Promise<DialogTimes[]> {
  const r = await k.rpc('dlg.list');
  const all = (Array.isArray(r.result) ? r.result : []) as Record<string, unknown>[];
  return all
    .map((d) => ({ ci: String(d['call-id']), startTs: Number(d.start_ts), timeout: Number(d.timeout) }))
    .filter((d) => d.startTs > 0 && d.timeout > 0);
}

/** Ends every dialog Kamailio holds confirmed (what a failed test left talking): BYE to both sides. */
export async function endDialogs(k: KamailioChild): Promise<void> {
  const r = await k.rpc('dlg.list');
  const all = (Array.isArray(r.result) ? r.result : []) as Record<string, unknown>[];
  for (const d of all.filter((x) => Number(x.state) === 4)) await k.rpc('dlg.end_dlg', [d.h_entry, d.h_id]);
}

/** What the scenarios log, per Call-ID. */
export interface SippCall {
  ci: string;
  /** gettimeofday at the INVITE sent, at the 200 OK, at the caller's BYE, at a BYE received (µs). */
  inviteUs?: number;
  answerUs?: number;
  hangupUs?: number;
  byeUs?: number;
  refused?: number;
}

/** sipp logs its gettimeofday variables as doubles: "1796400307.000000.134610.000000" is s.us. */
const US = (s: string): number => {
  const [sec, , us] = s.split('.');
  return Number(sec) * 1e6 + Number(us);
};

export function parseSippLog(text: string): Map<string, SippCall> {
  const calls = new Map<string, SippCall>();
  for (const line of text.split('\n')) {
    const m = /(INVITE|ANSWER|HANGUP|BYE|REFUSED) (\S+) (\S+)/.exec(line);
    if (!m) continue;
    const c = calls.get(m[2]!) ?? { ci: m[2]! };
    calls.set(c.ci, c);
    if (m[1] === 'INVITE') c.inviteUs = US(m[3]!);
    else if (m[1] === 'ANSWER') c.answerUs = US(m[3]!);
    else if (m[1] === 'HANGUP') c.hangupUs = US(m[3]!);
    else if (m[1] === 'BYE') c.byeUs = US(m[3]!);
    else c.refused = Number(m[3]);
  }
  return calls;
}

export interface Uas {
  port: number;
  proc: ChildProcess;
  /** What it logged so far. */
  calls(): Map<string, SippCall>;
  stop(): Promise<void>;
}

/** The sipp callee (uas.xml), logging every BYE it gets. */
export async function startUas(dir: string, port?: number): Promise<Uas> {
  port ??= await freeSipPort();
  const log = join(dir, `uas-${port}.log`);
  writeFileSync(log, '');
  const proc = track(
    spawn(
      'sipp',
      [
        '-sf',
        join(SCENARIOS, 'uas.xml'),
        '-i',
        '127.0.0.1',
        '-p',
        String(port),
        '-nostdin',
        '-trace_logs',
        '-log_file',
        log,
        '-max_socket',
        '10000',
        '-buff_size',
        '4194304',
      ],
      {
        detached: true,
        stdio: 'ignore',
      },
    ),
  );
  await sleep(100);
  return {
    port,
    proc,
    calls: () => parseSippLog(readFileSync(log, 'utf8')),
    async stop() {
      killTree(proc, 'SIGTERM');
      await exited(proc);
    },
  };
}

export interface UacRun {
  code: number | null;
  calls: Map<string, SippCall>;
  stdout: string;
}

/**
 * Runs the sipp caller: one call per row (R-URI user, extra header line),
 * `scenario` uac-hangup (talks `talkMs`, then BYE), uac-norr (the same,
 * ignoring Record-Route) or uac-wait (waits for the network's BYE).
 */
export async function runUac(o: {
  dir: string;
  kamailio: { sipPort: number };
  scenario: 'uac-hangup' | 'uac-norr' | 'uac-wait' | 'uac-forged' | 'uac-elsewhere';
  rows: [string, string][];
  talkMs?: number;
  rate?: number;
  /** Calls to place (the rows are used in turn); all the rows by default. */
  calls?: number;
  /** Calls open at once at most; `calls` by default. */
  limit?: number;
  timeoutSec?: number;
  /** The caller's address (any of 127.0.0.0/8): Kamailio sends it as the call's origin. */
  ip?: string;
  onStart?: (p: ChildProcess) => void;
}): Promise<UacRun> {
  const port = await freeSipPort();
  const csv = join(o.dir, `uac-${port}.csv`);
  const log = join(o.dir, `uac-${port}.log`);
  writeFileSync(csv, ['SEQUENTIAL', ...o.rows.map(([ruser, hdr]) => `${ruser};${hdr};`)].join('\n') + '\n');
  writeFileSync(log, '');
  const calls = o.calls ?? o.rows.length;
  // prettier-ignore
  const args = [
    '-sf', join(SCENARIOS, `${o.scenario}.xml`), '-inf', csv, '-i', o.ip ?? '127.0.0.1', '-p', String(port),
    '-m', String(calls), '-r', String(o.rate ?? 100), '-rp', '1000', '-l', String(o.limit ?? calls),
    '-d', String(o.talkMs ?? 1000), '-nostdin', '-trace_logs', '-log_file', log,
    '-timeout', `${o.timeoutSec ?? 30}s`, '-timeout_error', '-max_socket', '10000', '-buff_size', '4194304',
    `127.0.0.1:${o.kamailio.sipPort}`,
  ];
  const proc = track(spawn('sipp', args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] }));
  let stdout = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-20_000)));
  proc.stderr!.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-20_000)));
  o.onStart?.(proc);
  await exited(proc);
  return { code: proc.exitCode, calls: parseSippLog(readFileSync(log, 'utf8')), stdout };
}

/** The connector as its own process (`tessera kamailio`), so a test can SIGKILL it. */
export function spawnConnector(o: {
  kamailio: Pick<KamailioChild, 'evapiPort' | 'rpcUrl'>;
  gateways: string[];
  token: string;
  env?: Record<string, string>;
}): ChildProcess {
  return track(
    spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(ROOT, 'src', 'cli', 'main.ts'),
        'kamailio',
        '--evapi',
        `127.0.0.1:${o.kamailio.evapiPort}`,
        '--rpc',
        o.kamailio.rpcUrl,
        ...o.gateways.flatMap((g) => ['--gateway', g]),
        '--token',
        o.token,
      ],
      {
        cwd: ROOT,
        detached: true,
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, LOG_LEVEL: 'warn', ...o.env },
      },
    ),
  );
}
