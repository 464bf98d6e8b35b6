#!/usr/bin/env node
// Sample from a diffspec pipeline graph with onnxruntime-node: no Python, no sampler code here.
// The .onnx file runs the whole sampler; this script only draws the standard normal inputs, runs it once,
// prints a text preview and writes a PNG.
//
//   node sample.js digits-sampler.onnx [--n 8] [--seed 0] [--label K] [--guidance-scale S]
//                  [--draws draws.bin] [--out digits.png] [--raw-out sample.bin] [--card]
//
// --draws: float32 little-endian x_T [n, ...] followed by noise [S, n, ...] (S = the card's "draws"), e.g.
// the draws of `diffspec-sample --seed s` written by numpy, for results equal to Python's. Without it the
// script draws its own normals (a seeded xorshift + Box-Muller: reproducible, but not numpy's stream).
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const path = require('path');
const { readPipelineCard } = require('../web/metadata.js');

function fail(message) {
  process.stderr.write(`sample.js: error: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { n: 8, seed: 0, out: 'digits.png' };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) { rest.push(a); continue; }
    const key = a.slice(2);
    if (key === 'card' || key === 'help') { args[key] = true; continue; }
    if (i + 1 >= argv.length) fail(`${a} needs a value`);
    args[key.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = argv[++i];
  }
  if (args.help || rest.length !== 1) {
    process.stdout.write('usage: node sample.js MODEL.onnx [--n 8] [--seed 0] [--label K] [--guidance-scale S] ' +
      '[--draws draws.bin] [--out digits.png] [--raw-out sample.bin] [--card]\n');
    process.exit(args.help ? 0 : 2);
  }
  args.model = rest[0];
  for (const k of ['n', 'seed']) {
    const v = Number(args[k]);
    if (!Number.isInteger(v) || v < (k === 'n' ? 1 : 0)) fail(`--${k} ${args[k]}: expected an integer >= ${k === 'n' ? 1 : 0}`);
    args[k] = v;
  }
  return args;
}

function normals(count, seed) {
  // xorshift128+ seeded by splitmix32, then Box-Muller: standard normal float32 draws
  let s = (seed >>> 0) ^ 0x9e3779b9;
  const split = () => { s = (s + 0x9e3779b9) >>> 0; let z = s; z = Math.imul(z ^ (z >>> 16), 0x85ebca6b); z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35); return (z ^ (z >>> 16)) >>> 0; };
  const st = new Uint32Array([split(), split(), split(), split()]);
  const uniform = () => {
    let t = st[0] ^ (st[0] << 11); st[0] = st[1]; st[1] = st[2]; st[2] = st[3];
    st[3] = (st[3] ^ (st[3] >>> 19) ^ t ^ (t >>> 8)) >>> 0;
    return (st[3] + 1) / 4294967297;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const a = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(a);
    if (i + 1 < count) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

function crc32(buf) {
  let c = ~0;
  for (let i = 0; i < buf.length; i++) {
    c ^= buf[i];
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function png(width, height, channels, pixels) {
  // 8-bit grayscale (1) or RGB (3), no filter, one zlib stream
  const raw = Buffer.alloc((width * channels + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * channels + 1)] = 0;
    Buffer.from(pixels.buffer, pixels.byteOffset + y * width * channels, width * channels)
      .copy(raw, y * (width * channels + 1) + 1);
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = channels === 1 ? 0 : 2;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

function tileGrid(image, n, h, w, c, scale) {
  // image uint8 [n, h, w, c] -> one row-major grid, 1 px white gaps, each pixel repeated scale x scale
  const cols = Math.min(n, 8);
  const rows = Math.ceil(n / cols);
  const W = cols * (w * scale + 1) + 1;
  const H = rows * (h * scale + 1) + 1;
  const out = new Uint8Array(W * H * c).fill(255);
  for (let i = 0; i < n; i++) {
    const x0 = (i % cols) * (w * scale + 1) + 1;
    const y0 = Math.floor(i / cols) * (h * scale + 1) + 1;
    for (let y = 0; y < h * scale; y++) {
      for (let x = 0; x < w * scale; x++) {
        for (let k = 0; k < c; k++) {
          const src = ((i * h + Math.floor(y / scale)) * w + Math.floor(x / scale)) * c + k;
          out[((y0 + y) * W + x0 + x) * c + k] = image[src];
        }
      }
    }
  }
  return { W, H, out };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (err) {
    fail('onnxruntime-node is not installed: run `npm install --ignore-scripts` in examples/node');
  }
  if (!fs.existsSync(args.model)) fail(`model file ${args.model} does not exist`);
  const bytes = new Uint8Array(fs.readFileSync(args.model));
  let meta;
  try {
    meta = readPipelineCard(bytes);
  } catch (err) {
    fail(`${args.model}: ${err.message}`);
  }
  const { card, pipeline } = meta;
  if (args.card) {
    process.stdout.write(JSON.stringify(meta, null, 2) + '\n');
    return;
  }
  const shape = card.data.shape;
  const D = shape.reduce((a, b) => a * b, 1);
  const n = args.n;
  const S = pipeline.draws;
  let xT;
  let noise;
  if (args.draws) {
    const buf = fs.readFileSync(args.draws);
    const want = (1 + S) * n * D;
    if (buf.length !== 4 * want) {
      fail(`${args.draws} holds ${buf.length / 4} float32 values; this pipeline needs (1 + S) * n * D = ` +
        `(1 + ${S}) * ${n} * ${D} = ${want}: x_T [${n}, ${shape}] then noise [${S}, ${n}, ${shape}] (use --n)`);
    }
    const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    xT = all.subarray(0, n * D);
    noise = all.subarray(n * D);
  } else {
    const all = normals((1 + S) * n * D, args.seed);
    xT = all.subarray(0, n * D);
    noise = all.subarray(n * D);
  }
  const feeds = { x_T: new ort.Tensor('float32', xT, [n, ...shape]) };
  if (S) feeds.noise = new ort.Tensor('float32', noise, [S, n, ...shape]);
  if (pipeline.inputs.y) {
    const classes = card.num_classes;
    const y = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const label = args.label === undefined ? i % classes : Number(args.label);
      if (!Number.isInteger(label) || label < 0 || label > classes) fail(`--label ${args.label}: expected 0..${classes - 1} (or ${classes}, the null class)`);
      y[i] = BigInt(label);
    }
    feeds.y = new ort.Tensor('int64', y, [n]);
  } else if (args.label !== undefined) {
    fail('--label given, but this model is unconditional');
  }
  if (pipeline.inputs.guidance_scale) {
    const s = args.guidanceScale === undefined ? 1 : Number(args.guidanceScale);
    if (!Number.isFinite(s) || s < 0) fail(`--guidance-scale ${args.guidanceScale}: expected a number >= 0`);
    feeds.guidance_scale = new ort.Tensor('float32', new Float32Array([s]), [1]);
  } else if (args.guidanceScale !== undefined) {
    fail(`--guidance-scale: this graph's guidance is fixed (${JSON.stringify(pipeline.guidance)}); export it with --guidance dynamic`);
  }
  const session = await ort.InferenceSession.create(args.model, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
  const t0 = Date.now();
  const result = await session.run(feeds);
  const ms = Date.now() - t0;
  const sample = result.sample.data;
  if (args.rawOut) fs.writeFileSync(args.rawOut, Buffer.from(sample.buffer, sample.byteOffset, sample.byteLength));
  process.stdout.write(`${pipeline.sampler}, ${pipeline.steps} steps, ${pipeline.network_calls} network calls, ` +
    `${n} samples in ${ms} ms\n`);
  if (result.image) {
    const [, h, w, c] = result.image.dims;
    const img = result.image.data;
    const ramp = ' .:-=+*#%@';
    for (let i = 0; i < Math.min(n, 4); i++) {
      for (let y = 0; y < h; y++) {
        let line = '';
        for (let x = 0; x < w; x++) line += ramp[Math.min(9, Math.floor(img[((i * h + y) * w + x) * c] / 25.6))].repeat(2);
        process.stdout.write(line + '\n');
      }
      process.stdout.write('\n');
    }
    if (c === 1 || c === 3) {
      const { W, H, out } = tileGrid(img, n, h, w, c, 4);
      fs.writeFileSync(args.out, png(W, H, c, out));
      process.stdout.write(`wrote ${path.resolve(args.out)}\n`);
    }
  } else {
    process.stdout.write(`sample [${result.sample.dims}]: ${Array.from(sample.slice(0, 8)).map((v) => v.toFixed(4)).join(' ')} ...\n`);
  }
}

main().catch((err) => fail(String(err && err.message ? err.message : err).split('\n')[0]));
