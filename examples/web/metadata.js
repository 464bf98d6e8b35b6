// Read an ONNX file's metadata_props (key/value strings) without any library: onnxruntime-node and
// onnxruntime-web expose input and output names but no custom metadata. Works in Node.js and in browsers.
//
// ModelProto (onnx/onnx.proto): field 14 is `repeated StringStringEntryProto metadata_props`, each entry
// { 1: key, 2: value }. Protobuf wire format: a varint tag (field << 3 | wire type), then a varint (type 0),
// 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5).
(function (root) {
  function readVarint(buf, pos) {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= buf.length) throw new Error('truncated ONNX file (varint past the end)');
      const b = buf[pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return [value, pos];
      scale *= 128;
    }
  }

  function fields(buf, start, end, onField) {
    let pos = start;
    while (pos < end) {
      let tag;
      [tag, pos] = readVarint(buf, pos);
      const field = Math.floor(tag / 8);
      const wire = tag % 8;
      if (wire === 0) [, pos] = readVarint(buf, pos);
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        let len;
        [len, pos] = readVarint(buf, pos);
        if (pos + len > end) throw new Error('truncated ONNX file (field past the end)');
        onField(field, pos, pos + len);
        pos += len;
      } else throw new Error(`not an ONNX file (protobuf wire type ${wire})`);
    }
  }

  /** metadata_props of an ONNX model as a plain object {key: value}; `bytes` is a Uint8Array of the file. */
  function readMetadata(bytes) {
    const text = new TextDecoder('utf-8');
    const props = {};
    fields(bytes, 0, bytes.length, (field, start, end) => {
      if (field !== 14) return;
      let key = '';
      let value = '';
      fields(bytes, start, end, (f, s, e) => {
        if (f === 1) key = text.decode(bytes.subarray(s, e));
        if (f === 2) value = text.decode(bytes.subarray(s, e));
      });
      props[key] = value;
    });
    return props;
  }

  /** The pipeline card: {card: the model card fields, pipeline: sampler, steps, inputs, outputs, ...}. */
  function readPipelineCard(bytes) {
    const props = readMetadata(bytes);
    if (!('diffspec.pipeline' in props)) {
      throw new Error('not a diffspec pipeline graph (no diffspec.pipeline metadata): export one with ' +
        'diffspec-export --pipeline model.onnx -o sampler.onnx --sampler dpmpp_2m');
    }
    const card = {};
    for (const [k, v] of Object.entries(props)) {
      if (k.startsWith('diffspec.') && k !== 'diffspec.pipeline') card[k.slice('diffspec.'.length)] = JSON.parse(v);
    }
    return { card, pipeline: JSON.parse(props['diffspec.pipeline']) };
  }

  const api = { readMetadata, readPipelineCard };
  if (typeof module !== 'undefined' && module.exports) module.exports = api;
  else root.diffspecMetadata = api;
})(typeof self !== 'undefined' ? self : this);
