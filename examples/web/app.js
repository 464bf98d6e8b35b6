// The page's logic: load a pipeline graph, draw normals, run it once, paint the `image` output on the canvas.
// window.diffspec.sample({n, xT, noise, labels, guidanceScale}) runs it on given draws (what the test uses to
// compare with Python); without xT/noise it draws its own (seeded xorshift + Box-Muller, not numpy's stream).
/* global ort, diffspecMetadata */
'use strict';
(function () {
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a plain static server does not give
  const $ = (id) => document.getElementById(id);
  const status = (text) => { $('status').textContent = text; };
  let session = null;
  let meta = null;

  function normals(count, seed) {
    let s = (seed >>> 0) ^ 0x9e3779b9;
    const split = () => { s = (s + 0x9e3779b9) >>> 0; let z = s; z = Math.imul(z ^ (z >>> 16), 0x85ebca6b); z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35); return (z ^ (z >>> 16)) >>> 0; };
    const st = new Uint32Array([split(), split(), split(), split()]);
    const uniform = () => {
      const t = st[0] ^ (st[0] << 11); st[0] = st[1]; st[1] = st[2]; st[2] = st[3];
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

  async function load(source) {
    session = null;
    $('sample').disabled = true;
    const bytes = source instanceof Uint8Array ? source
      : new Uint8Array(await (await fetch(source).then((r) => {
        if (!r.ok) throw new Error(`${source}: HTTP ${r.status}`);
        return r;
      })).arrayBuffer());
    meta = diffspecMetadata.readPipelineCard(bytes);
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    const p = meta.pipeline;
    $('guidance').disabled = !p.inputs.guidance_scale;
    $('sample').disabled = false;
    status(`${meta.card.data.name || 'model'} ${JSON.stringify(meta.card.data.shape)}: ${p.sampler}, ${p.steps} steps, ` +
      `${p.network_calls} network calls, ${p.draws} noise draws per sample, guidance ${p.guidance.mode}`);
    return meta;
  }

  function paint(image, dims) {
    const [n, h, w, c] = dims;
    const cols = Math.min(n, 8);
    const rows = Math.ceil(n / cols);
    const canvas = $('grid');
    canvas.width = cols * (w + 1) + 1;
    canvas.height = rows * (h + 1) + 1;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < n; i++) {
      const tile = ctx.createImageData(w, h);
      for (let p = 0; p < h * w; p++) {
        for (let k = 0; k < 3; k++) tile.data[4 * p + k] = image[(i * h * w + p) * c + (c === 3 ? k : 0)];
        tile.data[4 * p + 3] = 255;
      }
      ctx.putImageData(tile, (i % cols) * (w + 1) + 1, Math.floor(i / cols) * (h + 1) + 1);
    }
  }

  async function sample(opts = {}) {
    if (!session) throw new Error('no model loaded');
    const { card, pipeline } = meta;
    const shape = card.data.shape;
    const D = shape.reduce((a, b) => a * b, 1);
    const n = opts.n || 16;
    const S = pipeline.draws;
    let xT = opts.xT;
    let noise = opts.noise;
    if (!xT) {
      const all = normals((1 + S) * n * D, opts.seed || 0);
      xT = all.subarray(0, n * D);
      noise = all.subarray(n * D);
    }
    xT = Float32Array.from(xT);
    noise = Float32Array.from(noise || []);
    if (xT.length !== n * D) throw new Error(`x_T has ${xT.length} values; expected n * D = ${n} * ${D} = ${n * D}`);
    if (noise.length !== S * n * D) {
      throw new Error(`noise has ${noise.length} values; expected S * n * D = ${S} * ${n} * ${D} = ${S * n * D}`);
    }
    const feeds = { x_T: new ort.Tensor('float32', xT, [n, ...shape]) };
    if (S) feeds.noise = new ort.Tensor('float32', noise, [S, n, ...shape]);
    if (pipeline.inputs.y) {
      const y = new BigInt64Array(n);
      for (let i = 0; i < n; i++) y[i] = BigInt(opts.labels ? opts.labels[i] : i % card.num_classes);
      feeds.y = new ort.Tensor('int64', y, [n]);
    }
    if (pipeline.inputs.guidance_scale) {
      feeds.guidance_scale = new ort.Tensor('float32', new Float32Array([opts.guidanceScale ?? 1]), [1]);
    }
    const t0 = performance.now();
    const out = await session.run(feeds);
    const ms = performance.now() - t0;
    if (out.image) paint(out.image.data, out.image.dims);
    status(`${n} samples, ${pipeline.sampler} ${pipeline.steps} steps, in ${ms.toFixed(0)} ms`);
    return { sample: Array.from(out.sample.data), dims: out.sample.dims, ms };
  }

  $('load').onclick = () => load($('model-url').value).catch((e) => status(`error: ${e.message}`));
  $('model-file').onchange = async (ev) => {
    const f = ev.target.files[0];
    if (f) load(new Uint8Array(await f.arrayBuffer())).catch((e) => status(`error: ${e.message}`));
  };
  $('sample').onclick = () => {
    const label = $('label').value.trim();
    const n = Number($('n').value);
    const labels = label === '' ? null : Array(n).fill(Number(label));
    sample({ n, seed: Number($('seed').value), labels, guidanceScale: Number($('guidance').value) })
      .catch((e) => status(`error: ${e.message}`));
  };
  const initial = new URLSearchParams(location.search).get('model') || $('model-url').value;
  $('model-url').value = initial;
  window.diffspec = {
    load,
    sample,
    ready: load(initial).then(() => sample({ n: Number($('n').value) })).catch((e) => {
      status(`error: ${e.message} (serve this folder and put a pipeline graph at ${initial}, or pick a file)`);
    }),
  };
})();
