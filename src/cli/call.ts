import WebSocket from 'ws';

/**
 * A tiny switch for the README tour: starts one call, ticks every second and
 * prints what the gateway answers, until the gateway cuts the call, the
 * requested seconds pass, or Ctrl-C (which stops the call cleanly).
 */
export function runDemoCall(o: { url: string; token: string; id: string; dest: string; seconds: number; json: boolean; out: (l: string) => void }): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(o.url, { headers: { Authorization: `Bearer ${o.token}` } });
    const call = `demo-${Date.now().toString(36)}`;
    let sec = 0;
    let timer: NodeJS.Timeout | undefined;
    let maxSec = 0;
    const send = (m: object): void => ws.send(JSON.stringify(m));
    const stop = (cause: string): void => {
      if (timer) clearInterval(timer);
      timer = undefined;
      send({ op: 'stop', ref: 'stop', call, sec, cause });
    };
    ws.on('unexpected-response', (_req, res) => {
      o.out(`gateway refused the connection: HTTP ${res.statusCode}`);
      resolve(1);
    });
    ws.on('error', (err) => {
      o.out(`connection failed: ${err.message}`);
      resolve(1);
    });
    ws.on('open', () => send({ op: 'start', ref: 'start', call, id: o.id, dest: o.dest }));
    process.once('SIGINT', () => stop('hangup'));
    ws.on('message', (data) => {
      const msgs = ([] as Record<string, unknown>[]).concat(JSON.parse(data.toString()));
      for (const m of msgs) {
        o.out(o.json ? JSON.stringify(m) : describe(m));
        if (m.op === 'started') {
          maxSec = Number(m.maxSec);
          timer = setInterval(() => {
            sec++;
            send({ op: 'tick', ref: sec, call, sec });
            if ((o.seconds && sec >= o.seconds) || sec >= maxSec) stop(sec >= maxSec ? 'max_sec' : 'normal');
          }, 1000);
        } else if (m.op === 'cutoff') {
          stop('cutoff');
        } else if (m.op === 'stopped' || (m.op === 'error' && m.ref === 'start')) {
          ws.close();
          resolve(m.op === 'stopped' ? 0 : 1);
        }
      }
    });
  });
}

function describe(m: Record<string, unknown>): string {
  switch (m.op) {
    case 'started':
      return `started: may talk ${m.maxSec} s, balance ${m.balance}, rate ${m.rate}/s`;
    case 'ticked':
      return `  ${String(m.ref).padStart(4)} s  balance ${m.balance}  (${m.secLeft} s left)`;
    case 'alert':
      return `ALERT: ${m.secLeft} s left (threshold ${m.level})`;
    case 'cutoff':
      return `CUT-OFF: ${m.reason}`;
    case 'stopped':
      return `stopped: billed ${m.billedSec} s, cost ${m.cost}, balance ${m.balance}`;
    default:
      return JSON.stringify(m);
  }
}
