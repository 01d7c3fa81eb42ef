// @hey-api/openapi-ts settings of scripts/check-clients: the served document
// (CLIENTS_SPEC) in, a fetch client with its types, SDK functions and zod schemas out
// (CLIENTS_TS_OUT, under the cargo target dir; never in the repo). Responses are
// validated against the document's schemas at run time (the zod validator), so a
// response the document does not describe fails where a client would.
export default {
  input: process.env.CLIENTS_SPEC,
  output: { path: process.env.CLIENTS_TS_OUT },
  logs: { level: 'warn' },
  plugins: [
    '@hey-api/client-fetch',
    '@hey-api/typescript',
    { name: 'zod', webhooks: true },
    { name: '@hey-api/sdk', validator: { request: false, response: 'zod' } },
  ],
};
