// `npm run build`: the n8n node and credential TypeScript -> dist/ (tsc), plus
// their icons. Not `n8n-node build`: its asset copy globs every svg/png in the
// repository outside the top-level node_modules, which here would pull in the
// n8n test runtime's (tests/n8n/node_modules) thousands of icons.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const ASSET_DIRS = ['node/nodes', 'credentials'];

function* walk(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      yield* walk(p);
    } else {
      yield p;
    }
  }
}

rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], {
  cwd: root,
  stdio: 'inherit',
});
let copied = 0;
for (const d of ASSET_DIRS) {
  for (const file of walk(join(root, d))) {
    if (/\.(svg|png)$/.test(file)) {
      const dest = join(dist, relative(root, file));
      mkdirSync(dirname(dest), { recursive: true });
      cpSync(file, dest);
      copied++;
    }
  }
}
console.log(`build: dist/ written (${copied} icon${copied === 1 ? '' : 's'})`);
