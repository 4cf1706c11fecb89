#!/usr/bin/env node
// The installed `cascache` executable. It lives outside dist/ so that it exists when npm links
// bins, which in a fresh clone of this repo happens before the packages are built (npm skips a bin
// whose target is missing).
require('../dist/bin.js');
