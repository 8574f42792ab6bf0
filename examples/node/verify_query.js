// An agency system calling its govnode node with grpc-js: one Verify (联机验证, 第十四条) and
// one Query (检索查询, 第二十六条) over mutual TLS, with the bundle `govnode agency add` wrote.
//
//   node verify_query.js BUNDLE_DIR HOST:PORT RESOURCE_CODE KEY_ITEM=VALUE [ITEM=CLAIMED ...]
//
// e.g. node verify_query.js ./fzga 127.0.0.1:7443 350000-1-000002 \
//        tyshxydm=91350000000000001X dwmc=福州某某科技有限公司
//
// Verify says, item by item, whether the claimed values match the stored record; Query reads
// the record by its key (masked where the caller's grant does not give clear text).
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "../../proto");
// The node's retry policy, as any gRPC client may follow it: RESOURCE_EXHAUSTED (a rate
// limit) is retried after the node's grpc-retry-pushback-ms, UNAVAILABLE with backoff.
const SERVICE_CONFIG = {
  methodConfig: [
    {
      name: [{ service: "govnode.v1.SharingService" }],
      retryPolicy: {
        maxAttempts: 4,
        initialBackoff: "0.2s",
        maxBackoff: "5s",
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
      },
    },
  ],
};

function pairs(args) {
  return Object.fromEntries(args.map((arg) => arg.split(/=(.*)/s, 2)));
}

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10_000); // every call has a deadline
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function main() {
  const [bundle, endpoint, resourceCode, keyArg, ...claimedArgs] = process.argv.slice(2);
  if (!keyArg) {
    console.error("usage: node verify_query.js BUNDLE HOST:PORT RESOURCE KEY=VALUE [ITEM=VALUE ...]");
    process.exit(2);
  }
  const definition = protoLoader.loadSync("govnode/v1/sharing.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
  });
  const { SharingService } = grpc.loadPackageDefinition(definition).govnode.v1;
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(path.join(bundle, "ca.crt")), // the province root
    fs.readFileSync(path.join(bundle, "client.key")),
    fs.readFileSync(path.join(bundle, "client.crt")), // leaf, then the issuing CA
  );
  const client = new SharingService(endpoint, credentials, {
    "grpc.service_config": JSON.stringify(SERVICE_CONFIG),
    "grpc.keepalive_time_ms": 60_000, // the node refuses pings more often than every 10 s
  });
  const key = pairs([keyArg]);
  try {
    const verified = await call(client, "Verify", {
      resource_code: resourceCode,
      key,
      claimed: pairs(claimedArgs),
    });
    console.log(`verify found=${verified.found} all_match=${verified.all_match}`);
    for (const m of verified.matches) console.log(`verify ${m.item} ${m.result}`);
    const page = await call(client, "Query", { resource_code: resourceCode, key });
    for (const row of page.rows) {
      const values = Object.entries(row.record.values).sort(([a], [b]) => (a < b ? -1 : 1));
      console.log(`query ${values.map(([k, v]) => `${k}=${v}`).join(" ")}`);
    }
    console.log(`query rows=${page.rows.length}`);
  } catch (err) {
    // A refusal: the status, the node's message, and the request id to quote to the operator.
    const requestId = err.metadata ? err.metadata.get("govnode-request-id")[0] : undefined;
    console.error(`refused ${grpc.status[err.code]}: ${err.details} (request id ${requestId})`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

main();
