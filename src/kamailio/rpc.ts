/**
 * Kamailio's RPC over JSON-RPC on its HTTP port (jsonrpcs + xhttp, POST /RPC):
 * how the connector ends a dialog (BYE to both sides), lists the dialogs
 * that still exist, hands the stops it could not deliver on to the next
 * connector (kamailio.cfg's htable `owed`) and reads the dialog events no
 * connector heard (htable `ends`).
 */
import { Agent, request } from 'node:http';

/** kamailio.cfg's htable of the stops closing connectors could not deliver. */
const OWED = 'owed';
/** kamailio.cfg's htable of the dialogs' end and failure events that no connector heard. */
const ENDS = 'ends';

export class KamailioRpc {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });
  private seq = 0;

  constructor(
    private readonly url: URL,
    private readonly timeoutMs = 2000,
  ) {}

  /** Calls one method; resolves with its result, rejects with Kamailio's error or a transport failure. */
  call(method: string, params: unknown[]): Promise<unknown> {
    const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: ++this.seq });
    return this.send(method, body, true);
  }

  /**
   * One POST. A kept-alive socket the server closed after its last reply (a
   * Kamailio whose xhttp route calls set_reply_close(), as Debian's stock
   * kamailio.cfg does) resets the next request sent on it: that one goes
   * again, once, on a fresh socket. Unretried, back-to-back requests failed
   * (a cut-off's dlg.end_dlg: the call talked on to Kamailio's fail-safe).
   * Both methods are safe to repeat: kamailio.cfg answers a repeated
   * dlg.end_dlg without sending anything.
   */
  private send(method: string, body: string, retry: boolean): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = request(
        this.url,
        {
          method: 'POST',
          agent: this.agent,
          timeout: this.timeoutMs,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => {
            let reply: { result?: unknown; error?: { code?: number; message?: string } };
            try {
              reply = JSON.parse(Buffer.concat(parts).toString('utf8')) as typeof reply;
            } catch {
              return reject(new Error(`rpc ${method}: HTTP ${res.statusCode}, not JSON`));
            }
            if (reply.error)
              reject(Object.assign(new Error(`rpc ${method}: ${reply.error.message}`), { rpcCode: reply.error.code }));
            else resolve(reply.result);
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`rpc ${method}: timed out`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (retry && req.reusedSocket && err.code === 'ECONNRESET') resolve(this.send(method, body, false));
        else reject(err);
      });
      req.end(body);
    });
  }

  /** Ends a dialog with a BYE to both sides. */
  endDialog(he: number, hi: number): Promise<unknown> {
    return this.call('dlg.end_dlg', [he, hi]);
  }

  /** Every dialog Kamailio holds, as dlg.list gives them (its variables as one object). */
  async listDialogs(): Promise<ListedDialog[]> {
    const r = await this.call('dlg.list', []);
    if (!Array.isArray(r)) return [];
    return (r as Record<string, unknown>[]).map((d) => ({
      ci: String(d['call-id']),
      he: Number(d.h_entry),
      hi: Number(d.h_id),
      state: Number(d.state),
      endTs: Number(d.end_ts) || 0,
      vars: Object.assign({}, ...(Array.isArray(d.variables) ? (d.variables as object[]) : [])) as Record<
        string,
        string
      >,
    }));
  }

  /**
   * A prepaid dialog's end or failure event that no connector heard (kamailio.cfg's htable `ends`,
   * written while none is attached), as evapi would have relayed it; undefined if none is kept.
   */
  async unheardOf(he: number, hi: number): Promise<string | undefined> {
    try {
      const r = (await this.call('htable.get', [ENDS, `${he}:${hi}`])) as { item?: { value?: unknown } };
      return typeof r.item?.value === 'string' ? r.item.value : undefined;
    } catch (err) {
      // Not there (expired, heard, or no prepaid dialog): Kamailio answers 500 "doesn't exist".
      if ((err as { rpcCode?: number }).rpcCode === 500) return undefined;
      throw err;
    }
  }

  /** Every event htable `ends` keeps (unheardOf), by its dialog's `h_entry:h_id`. */
  async unheard(): Promise<{ key: string; event: string }[]> {
    return (await this.dump(ENDS)).map(({ name, value }) => ({ key: name, event: value }));
  }

  /** An unheard event's call was stopped: its entry goes (one another connector removed first is no failure). */
  dropUnheard(key: string): Promise<void> {
    return this.drop(ENDS, key);
  }

  /** Keeps a stop (its JSON) for the next connector to send: `call`'s entry in htable `owed`. */
  handOn(call: string, stop: string): Promise<unknown> {
    return this.call('htable.sets', [OWED, call, stop]);
  }

  /** The stops connectors handed on (htable `owed`): each call's JSON as it was kept. */
  async handedOn(): Promise<{ call: string; stop: string }[]> {
    return (await this.dump(OWED)).map(({ name, value }) => ({ call: name, stop: value }));
  }

  /** A handed-on stop was answered: its entry goes (one another connector removed first is no failure). */
  dropHandedOn(call: string): Promise<void> {
    return this.drop(OWED, call);
  }

  private async dump(table: string): Promise<{ name: string; value: string }[]> {
    const r = await this.call('htable.dump', [table]);
    if (!Array.isArray(r)) return [];
    return (r as { slot?: { name?: unknown; value?: unknown }[] }[]).flatMap((e) =>
      (e.slot ?? []).map((x) => ({ name: String(x.name), value: String(x.value) })),
    );
  }

  private async drop(table: string, key: string): Promise<void> {
    await this.call('htable.delete', [table, key]).catch((err: { rpcCode?: number }) => {
      if (err.rpcCode !== 404) throw err;
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** A dialog as dlg.list lists it: its Call-ID, hash entry and id, state (4: confirmed) and dialog variables. */
export interface ListedDialog {
  ci: string;
  he: number;
  hi: number;
  state: number;
  /** When it ended (Unix seconds, whole; 0 while it has not). */
  endTs: number;
  vars: Record<string, string>;
}
