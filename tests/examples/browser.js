// Load the web example in headless Chromium, sample on given draws, print the canvas pixels and the samples.
//   node browser.js PLAYWRIGHT_CORE_DIR URL DRAWS_BIN N D
// DRAWS_BIN: float32 x_T [N, D] then noise [S, N, D]. Prints one JSON line.
'use strict';
const fs = require('fs');
const [pwDir, url, drawsPath, nText, dText] = process.argv.slice(2);
const { chromium } = require(pwDir);

(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    timeout: 60000,
  });
  const logs = [];
  try {
    const page = await browser.newPage();
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(String(e)));
    await page.goto(url, { timeout: 60000 });
    await page.waitForFunction(() => window.diffspec !== undefined, null, { timeout: 60000 });
    await page.evaluate(() => window.diffspec.ready);
    const buf = fs.readFileSync(drawsPath);
    const draws = Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4));
    const n = Number(nText);
    const D = Number(dText);
    const out = await page.evaluate(async ({ draws, n, D }) => {
      const run = await window.diffspec.sample({ n, xT: draws.slice(0, n * D), noise: draws.slice(n * D) });
      const canvas = document.getElementById('grid');
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let bad = null;
      try {
        await window.diffspec.sample({ n, xT: draws.slice(0, n * D - 1), noise: draws.slice(n * D) });
      } catch (e) {
        bad = e.message;
      }
      return { sample: run.sample, width: canvas.width, height: canvas.height, rgba: Array.from(pixels), bad,
        status: document.getElementById('status').textContent };
    }, { draws, n, D });
    out.logs = logs;
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await browser.close();
  }
})().catch((e) => { process.stderr.write(`${String(e.message || e).split('\n')[0]}\n${logs.join('\n')}\n`); process.exit(1); });
