// A real OpenID Connect provider (the certified `oidc-provider` package)
// for ioc's single sign-on tests: clients that get access tokens as JWTs
// (RS256, audience `ioc`) by the client-credentials grant.
//
//   node provider.mjs PORT STATE_DIR KIDS [TTL_S] [PAGE_URI]
//
// With PAGE_URI, the page's client `ioc-page` (public, authorization code
// with PKCE) may sign people in and return there; any login works (the
// package's development login pages), `chief` is an admin and `desk` an
// operator.
// KIDS: comma-separated key ids, the first signs; each key is made once
// and kept in STATE_DIR, so a restart with "b,a" rotates to a new key b
// while a's tokens still verify.
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [port, state, kids, ttl, page] = process.argv.slice(2);
const keys = kids.split(',').map((kid) => {
  const file = join(state, `${kid}.json`);
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(file, JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }));
  }
  return JSON.parse(readFileSync(file, 'utf8'));
});
const client = (id) => ({
  client_id: id,
  client_secret: `${id}-secret-0123456789`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
});
const roles = { desk: 'operator', chief: 'admin', norole: undefined };
const clients = Object.keys(roles).map((id) => client(id));
if (page) {
  clients.push({
    client_id: 'ioc-page',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [page],
  });
}
const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys },
  clients,
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:ioc',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: 'ioc',
        accessTokenTTL: Number(ttl || 300),
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // A person's token carries the account's role, a client's its own.
  extraTokenClaims: (ctx, token) => {
    const role = roles[token.accountId || token.clientId];
    return role ? { role } : {};
  },
});
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
