#!/usr/bin/env node
'use strict';
// The `urs` command. Runs the compiled CLI (built by `npm ci` through the root `prepare` script).
require('../dist/main.js')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
