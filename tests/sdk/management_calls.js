// Drive authing-node-sdk's own ManagementClient methods (signature mode, spec 2) against a
// host. Argument: JSON {nodeModules, host, accessKeyId, accessKeySecret, calls}, where calls is
// a list of [methodName, argument]. Prints a JSON array with one {ok, answer} or
// {ok: false, error, status} per call, in order.
"use strict";
const path = require("path");

async function main() {
  const input = JSON.parse(process.argv[2]);
  const { ManagementClient } = require(path.join(input.nodeModules, "authing-node-sdk"));
  const client = new ManagementClient({
    accessKeyId: input.accessKeyId,
    accessKeySecret: input.accessKeySecret,
    host: input.host,
  });
  const results = [];
  for (const [method, argument] of input.calls) {
    try {
      results.push({ ok: true, answer: await client[method](argument) });
    } catch (error) {
      const status = error && error.response ? error.response.status : null;
      results.push({ ok: false, error: String((error && error.message) || error), status });
    }
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
