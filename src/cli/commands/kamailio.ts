/** `tessera kamailio`: the Kamailio connector (src/kamailio), a switch of Tessera's like any other. */
import { CLOSE_WAIT_MS, KamailioConnector, TICK_LEAD_MS } from '../../kamailio/connector';
import { createLogger } from '../../observability/log';
import { parseOptions, usageError, type Command } from '../command';

export const kamailioCommands: Record<string, Command> = {
  kamailio: {
    summary: "meter Kamailio's prepaid calls: connect its evapi to Tessera's switch protocol",
    usage:
      '[--evapi 127.0.0.1:8448] [--rpc http://127.0.0.1:5071/RPC] [--gateway ws://localhost:$PORT/v1/switch]... [--token SWITCH_TOKEN]' +
      ` [--tick-lead-ms ${TICK_LEAD_MS}]` +
      ' (or KAMAILIO_EVAPI, KAMAILIO_RPC, TESSERA_GATEWAYS comma-separated, TESSERA_SWITCH_TOKEN, KAMAILIO_TICK_LEAD_MS)',
    async run(cli) {
      const { values } = parseOptions(cli, {
        evapi: { type: 'string', default: process.env.KAMAILIO_EVAPI ?? '127.0.0.1:8448' },
        rpc: { type: 'string', default: process.env.KAMAILIO_RPC ?? 'http://127.0.0.1:5071/RPC' },
        gateway: { type: 'string', multiple: true },
        token: { type: 'string', default: process.env.TESSERA_SWITCH_TOKEN },
        'tick-lead-ms': { type: 'string', default: process.env.KAMAILIO_TICK_LEAD_MS ?? String(TICK_LEAD_MS) },
      });
      const [host, port] = splitHostPort(values.evapi);
      const gateways = (
        values.gateway?.length
          ? values.gateway
          : (process.env.TESSERA_GATEWAYS ?? `ws://localhost:${process.env.PORT || 8080}/v1/switch`).split(',')
      )
        .flatMap((g) => g.split(','))
        .map((g) => g.trim())
        .filter(Boolean);
      if (!values.token) throw usageError('a switch token is needed: --token or TESSERA_SWITCH_TOKEN');
      try {
        new URL(values.rpc);
      } catch {
        throw usageError(`--rpc is not a URL: ${values.rpc}`);
      }
      const tickLeadMs = Number(values['tick-lead-ms']);
      if (!Number.isInteger(tickLeadMs) || tickLeadMs < 0 || tickLeadMs > 999)
        throw usageError(`--tick-lead-ms must be 0 to 999, not ${values['tick-lead-ms']}`);
      const log = createLogger(process.env.LOG_LEVEL ?? 'info', 'tessera-kamailio');
      const connector = new KamailioConnector({
        evapiHost: host,
        evapiPort: port,
        rpcUrl: values.rpc,
        gateways,
        token: values.token,
        log,
        tickLeadMs,
      });
      connector.start();
      log.info({ evapi: values.evapi, rpc: values.rpc, gateways }, 'kamailio connector running');
      // SIGTERM (systemd's stop) or SIGINT: the stops owed are delivered first (close()), within
      // CLOSE_WAIT_MS. The same signal again ends the process at once (its handler is gone).
      await new Promise<void>((resolve) => {
        const bye = (signal: NodeJS.Signals): void => {
          log.info({ signal, waitMs: CLOSE_WAIT_MS }, 'closing: delivering the stops owed');
          void connector.close().then(resolve);
        };
        process.once('SIGINT', bye);
        process.once('SIGTERM', bye);
      });
    },
  },
};

function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 1 || port > 65535)
    throw usageError(`--evapi must be HOST:PORT, not ${s}`);
  return [s.slice(0, i), port];
}
