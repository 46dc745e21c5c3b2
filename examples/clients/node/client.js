// Runs a helium.v1 workflow on a `helium-trt serve` instance from Node.js and prints each row's
// outputs and the run statistics.
//
//   npm ci
//   node client.js 127.0.0.1:50051                  # the small workflow built below
//   node client.js 127.0.0.1:50051 request.json     # a RunRequest in the protobuf JSON mapping
//
// The .proto files are loaded at run time from ../../../protos (or $HELIUM_PROTO_DIR).
//
// Rows are google.protobuf.Struct messages. The protobuf JSON mapping writes a Struct as a plain
// object ({"question": "..."}), and Python's json_format and grpcurl apply that mapping, but
// protobufjs (under @grpc/proto-loader) does not: it sees Struct as the message it is,
// {fields: {question: {stringValue: "..."}}}, and silently drops the keys of a plain object,
// so the server receives empty rows ("row 0 has no column 'question'"). toStruct() below wraps
// a plain object by hand, and fromValue() unwraps one.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = process.env.HELIUM_PROTO_DIR || path.join(__dirname, '..', '..', '..', 'protos');

// camelCase field names (keepCase: false), as in the JSON mapping, so a workflow file written
// for `helium-trt run` (as JSON) loads as it is; enums as their names; zero values filled in
// (proto3 leaves them off the wire); `event` names the field a RunEvent's oneof holds.
const LOAD_OPTIONS = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

function loadService() {
  const definition = protoLoader.loadSync(path.join('helium', 'v1', 'service.proto'),
    { ...LOAD_OPTIONS, includeDirs: [PROTO_DIR] });
  return grpc.loadPackageDefinition(definition).helium.v1.HeliumService;
}

// A plain JSON value as a google.protobuf.Value message, the way protobufjs wants it.
function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: toStruct(value) };
}

// A plain object (a row: column -> string or list of strings) as a google.protobuf.Struct.
function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

// The inverse, for Structs the server sends back (none in RunEvent today; shown for symmetry).
function fromValue(value) {
  if ('stringValue' in value) return value.stringValue;
  if ('numberValue' in value) return value.numberValue;
  if ('boolValue' in value) return value.boolValue;
  if ('listValue' in value) return (value.listValue.values || []).map(fromValue);
  if ('structValue' in value) {
    const out = {};
    for (const [k, v] of Object.entries(value.structValue.fields || {})) out[k] = fromValue(v);
    return out;
  }
  return null;
}

// A small workflow: one LLM call per row answering its question, with a shared system prompt.
function defaultRequest() {
  return {
    workflow: {
      name: 'node_client',
      ops: [
        { id: 'question', input: { column: 'question' } },
        { id: 'prompt', format: { template: 'Answer in one short sentence.\nQ: {question}\nA:' } },
        { id: 'answer', llm: { prompt: 'prompt', config: { maxTokens: 8, temperature: 0 } } },
        { id: 'out', output: { input: 'answer', name: 'answer' } },
      ],
    },
    rows: [{ question: 'What is the capital of France?' }, { question: 'Name a primary color.' }],
  };
}

// A RunRequest from its JSON mapping: everything but the rows loads as it is.
function toRunRequest(json) {
  const request = 'workflow' in json ? { ...json } : { workflow: json };
  request.rows = (request.rows || []).map(toStruct);
  return request;
}

function run(address, request) {
  const HeliumService = loadService();
  const client = new HeliumService(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    let failed = 0;
    const call = client.Run(request);
    call.on('data', (event) => {
      if (event.event === 'rowOutput') {
        console.log(`row ${event.rowOutput.row || 0}:`);
        for (const [name, text] of Object.entries(event.rowOutput.outputs || {})) {
          console.log(`  ${name}: ${text}`);
        }
      } else if (event.event === 'error') {
        failed += 1;
        const e = event.error;
        console.error(`row ${e.row || 0}: error in ${e.opId || '-'}: ${e.message}`);
      } else if (event.event === 'runStats') {
        console.log('stats:');
        for (const [key, value] of Object.entries(event.runStats)) console.log(`  ${key}: ${value}`);
      }
    });
    call.on('error', (err) => { client.close(); reject(err); });
    call.on('end', () => { client.close(); resolve(failed); });
  });
}

async function main(argv) {
  if (argv.length < 1 || argv.length > 2 || argv[0].startsWith('-')) {
    console.error('usage: node client.js HOST:PORT [request.json]');
    return 2;
  }
  const request = argv[1] ? toRunRequest(JSON.parse(fs.readFileSync(argv[1], 'utf8')))
    : toRunRequest(defaultRequest());
  try {
    return (await run(argv[0], request)) ? 1 : 0;
  } catch (err) {
    console.error(`helium-trt node client: ${grpc.status[err.code] || err.code}: ${err.details || err.message}`);
    return 2;
  }
}

module.exports = { toStruct, toValue, fromValue, toRunRequest };

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
