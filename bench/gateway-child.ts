/**
 * Runs the gateway (dist/src/main.js, exactly as `npm start` does after its
 * build) as bench/switch.ts's child process, with one addition: when the
 * bench's stdin pipe closes (the bench exited, even by SIGKILL) the gateway gets
 * SIGINT and shuts down, so no gateway outlives its benchmark. A graceful exit
 * is also what makes `node --cpu-prof` write its profile.
 */
import { join } from 'node:path';

process.stdin.on('end', () => process.kill(process.pid, 'SIGINT'));
process.stdin.on('error', () => process.kill(process.pid, 'SIGINT'));
process.stdin.resume();

require(join(__dirname, '..', 'src', 'main.js'));
