'use strict';
// Locates and loads the compiled addon (build/Release/strata.node) on first
// use, so that requiring the package never fails just because the native
// part is not built yet: the error comes when a model is actually used.

const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..', '..');
let cached = null;

function candidates() {
  if (process.env.STRATA_ADDON) {
    return [path.resolve(process.env.STRATA_ADDON)];
  }
  return [
    path.join(root, 'build', 'Release', 'strata.node'),
    path.join(root, 'build', 'Debug', 'strata.node'),
  ];
}

function binding() {
  if (cached !== null) {
    return cached;
  }
  const tried = candidates();
  const found = tried.find((p) => fs.existsSync(p));
  if (found === undefined) {
    const err = new Error(
      `strata: the native addon is not built (looked for ${tried.join(', ')}). ` +
        'Build it from the package root with `npm run build:native` ' +
        '(node-gyp rebuild: needs a C compiler, make and python3; node headers come from ' +
        'npm_config_nodedir, e.g. `npm_config_nodedir=/usr npm run build:native`).',
    );
    err.code = 'STRATA_ERR_ADDON_MISSING';
    throw err;
  }
  try {
    cached = require(found);
  } catch (cause) {
    const err = new Error(
      `strata: failed to load the native addon ${found}: ${cause.message}. ` +
        'Rebuild it with `npm run build:native` (it must match this Node.js version and platform).',
      { cause },
    );
    err.code = 'STRATA_ERR_ADDON_LOAD';
    throw err;
  }
  return cached;
}

module.exports = { binding };
