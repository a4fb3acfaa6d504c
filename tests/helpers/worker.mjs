// Real strata-worker processes for tests: a free loopback port, and a
// daemon started with the given arguments that resolves once it printed READY.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT } from './models.mjs';

export { freePort } from '../../scripts/n8n-runtime.mjs';

export const WORKER = process.env.STRATA_WORKER_BIN || path.join(ROOT, 'native/build/strata-worker');

/**
 * Start `strata-worker --threads 1 ...args`. live (a Set), if given, holds
 * the process until it exits, so a test can kill whatever is left.
 */
export function startWorker(args, { live } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(WORKER, ['--threads', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    live?.add(p);
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`worker did not start: ${err}`)), 10000);
    p.stdout.on('data', (d) => {
      out += d;
      if (out.includes('READY')) {
        clearTimeout(timer);
        resolve(p);
      }
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.once('exit', (code) => {
      live?.delete(p);
      clearTimeout(timer);
      reject(new Error(`worker exited with ${code}: ${err}`));
    });
  });
}
