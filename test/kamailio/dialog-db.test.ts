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

/** A dialog row as db_text writes it (':' escaped), of Call-ID `ci` (escaped too). */
const dialogRow = (id: number, ci: string): string =>
  `${id}:4515:${15000 + id}:${ci}:sip\\:caller@127.0.0.1\\:5060:tag-${id}:sip\\:x@y:peer:1:0:::sip\\:c:sip\\:g:` +
  'udp\\:127.0.0.1\\:5060:udp\\:127.0.0.1\\:5060:4:1796600846:1796610848:0:0:FAILSAFE:sip\\:d:\n';

/** A clean shutdown as htable and db_text make it: every table rewritten, with a live call's rows. */
function cleanShutdown(db: string): void {
  const header = readFileSync(join(db, 'callers'), 'utf8').split('\n')[0];
  writeFileSync(join(db, 'callers'), `${header}\n1:live-call:0:0:tag-1:1796640000\n`);
  writeFileSync(join(db, 'dialogs'), `${header}\n1:live-call:0:1:1:1796640000\n`);
  appendFileSync(join(db, 'dialog'), dialogRow(1, 'live-call'));
}

describe.skipIf(!existsSync(SCHEMA))('dialog-db.sh', () => {
  let dir: string;
  let db: string;
  const prepare = (): void => void execFileSync('sh', [SCRIPT, db], { stdio: 'ignore' });
  const started = (): void => void execFileSync('sh', [SCRIPT, '--started', db]);
  const rows = (t: string): string[] => readFileSync(join(db, t), 'utf8').split('\n').slice(1).filter(Boolean);
  const kept = (): boolean =>
    rows('callers').some((r) => r.startsWith('1:live-call:')) && rows('dialog').some((r) => r.includes(':live-call:'));

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

  it('keeps the guards of the dialogs kept only, counted from them', () => {
    // A call ringing at the shutdown, or up across a second restart, has no dialog written: its
    // guard stayed for the htables' 12 h, its count never back to 0.
    cleanShutdown(db);
    const header = readFileSync(join(db, 'callers'), 'utf8').split('\n')[0];
    appendFileSync(join(db, 'dialog'), dialogRow(2, 'live-call') + dialogRow(3, 'odd\\:id@example.net'));
    appendFileSync(join(db, 'callers'), '2:rang:0:0:tag-9:1796640000\n3:odd\\:id@example.net:0:0:tag-3:1796640000\n');
    writeFileSync(join(db, 'dialogs'), `${header}\n1:live-call:0:1:1:1796640000\n2:rang:0:1:1:1796640000\n`);
    prepare();
    expect(rows('callers')).toEqual([
      '1:live-call:0:0:tag-1:1796640000',
      '2:odd\\:id@example.net:0:0:tag-3:1796640000',
    ]);
    // Two dialogs of live-call were written, one of the other: the counts are theirs.
    expect(rows('dialogs')).toEqual(['1:live-call:0:1:2:1796640000', '2:odd\\:id@example.net:0:1:1:1796640000']);
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
