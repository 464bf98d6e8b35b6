"""examples/web: the page samples with onnxruntime-web in headless Chromium and paints Python's digits.

The page is served from a local http.server bound to 127.0.0.1 (examples/web, plus the test's model at
/model.onnx); Debian's chromium is driven by playwright-core from examples/web/node_modules (no browser
download).
"""

import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path

import numpy as np
from diffspec.runtime.output import to_uint8
from js_helpers import EXAMPLES, node, require

WEB = EXAMPLES / "web"


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }
    model: Path

    def translate_path(self, path):
        if path.split("?")[0] == "/model.onnx":
            return str(self.model)
        return super().translate_path(path)

    def log_message(self, *args):
        pass


def _serve(model):
    handler = type("Handler", (_Handler,), {"model": model})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(WEB)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_page_paints_python_samples(digits):
    pw = require(WEB / "node_modules" / "playwright-core", "playwright-core")
    require(WEB / "node_modules" / "onnxruntime-web", "onnxruntime-web")
    require(Path("/usr/bin/chromium"), "Debian's chromium")
    server = _serve(Path(digits.path))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?model=model.onnx"
        d = int(np.prod(digits.model.data_shape))
        r = subprocess.run(
            [
                node(),
                str(Path(__file__).with_name("browser.js")),
                str(pw),
                url,
                str(digits.draws),
                str(digits.n),
                str(d),
            ],
            capture_output=True,
            text=True,
            timeout=150,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    got = np.asarray(out["sample"], dtype=np.float32).reshape(digits.expected.shape)
    assert np.max(np.abs(got - digits.expected)) / np.max(np.abs(digits.expected)) <= 1e-5
    # the canvas: tile i at ((i % 8) * 9 + 1, (i // 8) * 9 + 1), grey levels of Python's samples
    rgba = np.asarray(out["rgba"], dtype=np.uint8).reshape(out["height"], out["width"], 4)
    expected = to_uint8(digits.expected[:, 0], digits.model.card.data.range)
    for i in range(digits.n):
        x, y = (i % 8) * 9 + 1, (i // 8) * 9 + 1
        tile = rgba[y : y + 8, x : x + 8].astype(int)
        assert np.max(np.abs(tile[..., 0] - expected[i])) <= 1  # float32 vs float64 may round one level apart
        assert (tile[..., 0] == tile[..., 1]).all() and (tile[..., 3] == 255).all()
    assert "x_T has" in out["bad"] and "ddpm" in out["status"]
