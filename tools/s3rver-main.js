// A real S3-protocol server process for tests: `node s3rver-main.js <port> <dir>`. Prints
// `ready <port>` once it listens; creates the buckets named in S3RVER_BUCKETS (comma-separated).
const S3rver = require('s3rver');

const [port, directory] = process.argv.slice(2);
const buckets = (process.env.S3RVER_BUCKETS || '').split(',').filter(Boolean).map((name) => ({ name }));
const server = new S3rver({ port: Number(port), address: '127.0.0.1', silent: true, directory, configureBuckets: buckets });
server.run().then(
  ({ port: actual }) => process.stdout.write(`ready ${actual}\n`),
  (err) => {
    process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  },
);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close().finally(() => process.exit(0)));
