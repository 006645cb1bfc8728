/**
 * Stand-ins for Kamailio as the connector sees it, for tests of the connector
 * alone: an evapi peer that sends the events a test writes and keeps every
 * answer, and a JSON-RPC stub whose dlg.list lists the dialogs a test puts in
 * and which keeps htables `owed` and `ends` as Kamailio does.
 */
import { createServer as httpServer, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { afterAll, beforeAll } from 'vitest';
import type { Product } from '../../src/catalog/schema';
import type { Gateway } from '../../src/gateway/server';
import { KamailioConnector } from '../../src/kamailio/connector';
import { encodeNetstring, NetstringReader } from '../../src/kamailio/netstring';
import { createLogger } from '../../src/observability/log';
import { gateway, seedCatalog, startHarness, token, type Harness } from '../support/harness';

/** Kamailio's evapi as the connectors see it: every connection gets the events, every answer is kept. */
export interface FakeEvapi {
  server: Server;
  port: number;
  socks: Set<Socket>;
  answers: Record<string, unknown>[];
  /** The connectors' `.`: each has read an event it did not answer. */
  acks: number;
  send(event: object): void;
  /**
   * Called when a connector closes its side, before this one closes its own: what Kamailio
   * relays until its evapi process reads that end (it counts the connector attached until then).
   */
  onLeave?: (sock: Socket) => void;
}

export async function fakeEvapi(): Promise<FakeEvapi> {
  const socks = new Set<Socket>();
  const answers: Record<string, unknown>[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    socks.add(s);
    s.on('end', () => {
      self.onLeave?.(s);
      s.end();
    });
    const reader = new NetstringReader();
    s.on('data', (d: Buffer) => {
      for (const p of reader.push(d))
        if (p !== '.') answers.push(JSON.parse(p) as Record<string, unknown>);
        else self.acks++;
    });
    s.on('error', () => undefined);
    s.on('close', () => socks.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const send = (event: object): void => {
    for (const s of socks) s.write(encodeNetstring(JSON.stringify(event)));
  };
  const self: FakeEvapi = { server, port: (server.address() as AddressInfo).port, socks, answers, acks: 0, send };
  return self;
}

/** Kamailio's JSON-RPC stub: its address, what dlg.list lists and the methods called so far. */
export interface FakeRpc {
  server: HttpServer;
  url: string;
  /** What dlg.list lists (none by default: what a started connector lists to take calls up). */
  dialogs: object[];
  /** Every method called, with its parameters (dlg.end_dlg: a cut), and when (performance.now()). */
  calls: { method: string; params: unknown[]; at: number }[];
  /** htable `owed` (htable.sets, htable.dump, htable.delete): the stops connectors handed on. */
  owed: Map<string, string>;
  /** htable `ends` (htable.get, htable.dump, htable.delete): the dialog events no connector heard, by `h_entry:h_id`. */
  ends: Map<string, string>;
  /** How long dlg.list takes to answer (ms): a Kamailio busy, or a slow link. */
  listDelayMs: number;
  /**
   * How many of the next requests of a method on a table (`htable.dump owed`) are answered as by a
   * Kamailio too busy to (HTTP 503, no JSON-RPC answer).
   */
  busy: Map<string, number>;
  /**
   * The htables this Kamailio lacks (a kamailio.cfg from before one existed): each htable request
   * on one is answered with Kamailio's error, 500 "No such htable".
   */
  missing: Set<string>;
  /** How many of the next requests of a method on a table (`dlg.list undefined`) are answered with an error. */
  refused: Map<string, number>;
}

export async function fakeRpc(): Promise<FakeRpc> {
  const dialogs: object[] = [];
  const calls: FakeRpc['calls'] = [];
  const owed = new Map<string, string>();
  const ends = new Map<string, string>();
  const tables = new Map([
    ['owed', owed],
    ['ends', ends],
  ]);
  const answer = (method: string, params: unknown[]): { result?: unknown; error?: object } => {
    const [name, key, value] = params.map(String);
    if (method === 'dlg.list') return { result: dialogs };
    if (method.startsWith('htable.') && self.missing.has(name!))
      return { error: { code: 500, message: 'No such htable' } };
    const table = tables.get(name!);
    if (!method.startsWith('htable.') || !table) return { result: [] };
    if (method === 'htable.get')
      return table.has(key!)
        ? { result: { item: { name: key, value: table.get(key!) } } }
        : { error: { code: 500, message: "Key name doesn't exist in htable." } };
    if (method === 'htable.sets') table.set(key!, value!);
    else if (method === 'htable.dump')
      return {
        result: [...table].map(([n, v]) => ({ entry: 0, size: 1, slot: [{ name: n, value: v, type: 'str' }] })),
      };
    else if (method === 'htable.delete' && !table.delete(key!))
      return { error: { code: 404, message: 'Key not found in htable.' } };
    return { result: 'Ok.' };
  };
  const server = httpServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const { id, method, params } = JSON.parse(body) as { id: number; method: string; params: unknown[] };
      calls.push({ method, params, at: performance.now() });
      const what = `${method} ${String(params?.[0])}`;
      const busy = self.busy.get(what) ?? 0;
      if (busy > 0) {
        self.busy.set(what, busy - 1);
        res.statusCode = 503;
        return res.end('busy');
      }
      const refused = self.refused.get(what) ?? 0;
      if (refused > 0) {
        self.refused.set(what, refused - 1);
        return res.end(JSON.stringify({ jsonrpc: '2.0', id, error: { code: 500, message: 'Internal error' } }));
      }
      const reply = JSON.stringify({ jsonrpc: '2.0', id, ...answer(method, params ?? []) });
      if (method === 'dlg.list' && self.listDelayMs > 0) setTimeout(() => res.end(reply), self.listDelayMs);
      else res.end(reply);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/RPC`;
  const self: FakeRpc = {
    server,
    url,
    dialogs,
    calls,
    owed,
    ends,
    listDelayMs: 0,
    busy: new Map(),
    missing: new Set(),
    refused: new Map(),
  };
  return self;
}

/** A real Redis and gateway with a stand-in Kamailio, for the tests of one file. */
export interface FakeStack {
  h: Harness;
  gw: Gateway;
  evapi: FakeEvapi;
  rpc: FakeRpc;
  /** A switch token, under the name the stack was given. */
  tok: string;
  /** A connector on the stand-in Kamailio, not started yet: on the stack's gateway unless told another. */
  connector(o?: { gateway?: string; log?: Logger }): KamailioConnector;
}

/** The stack, set up before the file's tests (vitest's beforeAll) and torn down after them. */
export function useFakeStack(products: Product[], tokenName: string): FakeStack {
  const s = {
    connector: (o: { gateway?: string; log?: Logger } = {}) =>
      new KamailioConnector({
        evapiHost: '127.0.0.1',
        evapiPort: s.evapi.port,
        rpcUrl: s.rpc.url,
        gateways: [o.gateway ?? `ws://127.0.0.1:${s.gw.port}/v1/switch`],
        token: s.tok,
        log: o.log ?? createLogger('silent'),
      }),
  } as FakeStack;
  beforeAll(async () => {
    s.h = await startHarness();
    await seedCatalog(s.h, products);
    s.tok = await token(s.h, 'switch', tokenName);
    s.gw = await gateway(s.h);
    s.evapi = await fakeEvapi();
    s.rpc = await fakeRpc();
  });
  afterAll(async () => {
    await new Promise((r) => s.evapi?.server.close(r));
    await new Promise((r) => s.rpc?.server.close(r));
    await s.gw?.close();
    await s.h?.stop();
  });
  return s;
}
