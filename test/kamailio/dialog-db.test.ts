/**
 * deploy/kamailio/dialog-db.sh on its own: what it keeps of the db_text tables
 * Kamailio left, by how the last Kamailio ended. Needs only Debian's kamailio
 * table definitions, not a running Kamailio.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const SCRIPT = join(__dirname, '..', '..', 'deploy', 'kamailio', 'dialog-db.sh');
const SCHEMA = '/usr/share/kamailio/dbtext/kamailio';

/** A clean shutdown as htable and db_text make it: every table rewritten, with a live call's rows. */
function cleanShutdown(db: string): void {
  const header = readFileSync(join(db, 'callers'), 'utf8').split('\n')[0];
  writeFileSync(join(db, 'callers'), `${header}\n1:live-call:0:2:sip\\:alice@example.net:0\n`);
  appendFileSync(join(db, 'dialog'), 'live-dialog-row\n');
}

describe.skipIf(!existsSync(SCHEMA))('dialog-db.sh', () => {
  let dir: string;
  let db: string;
  const prepare = (): void => void execFileSync('sh', [SCRIPT, db], { stdio: 'ignore' });
  const started = (): void => void execFileSync('sh', [SCRIPT, '--started', db]);
  const kept = (): boolean =>
    readFileSync(join(db, 'callers'), 'utf8').includes('live-call') &&
    readFileSync(join(db, 'dialog'), 'utf8').includes('live-dialog-row');

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dialog-db-'));
    db = join(dir, 'db');
    prepare();
    started();
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps what a clean shutdown wrote', () => {
    cleanShutdown(db);
    prepare();
    expect(kept()).toBe(true);
  });

  it('drops what a Kamailio that came up and crashed did not write', () => {
    cleanShutdown(db);
    prepare();
    started();
    prepare();
    expect(kept()).toBe(false);
  });

  it('keeps, over a start that failed before reading them, what the clean shutdown before it wrote', () => {
    // A config error: Kamailio exits before any module reads a table, and systemd's Restart= (or the
    // operator, once the config is fixed) starts it again. Its calls are up: taken for a crash, their
    // dialogs were dropped, and the connector stopped them `lost`, their legs talking on unmetered.
    cleanShutdown(db);
    prepare();
    prepare();
    expect(kept()).toBe(true);
  });
});
