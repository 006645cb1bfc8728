#!/usr/bin/env node
// Launcher for `npx tessera`: runs the compiled CLI, building it first on a fresh checkout.
'use strict';
const { existsSync } = require('node:fs');
const { join } = require('node:path');
const { execSync } = require('node:child_process');

const root = join(__dirname, '..', '..');
const main = join(root, 'dist', 'src', 'cli', 'main.js');
if (!existsSync(main)) execSync('npm run -s build', { cwd: root, stdio: 'inherit' });
const cli = require(main);
cli.runCli(process.argv.slice(2)).then(cli.exitWhenWritten);
