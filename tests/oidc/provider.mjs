// A real OpenID Connect provider (the certified `oidc-provider` package)
// for ioc's single sign-on tests: clients that get access tokens as JWTs
// (RS256, audience `ioc`) by the client-credentials grant.
//
//   node provider.mjs PORT STATE_DIR KIDS [TTL_S]
//
// KIDS: comma-separated key ids, the first signs; each key is made once
// and kept in STATE_DIR, so a restart with "b,a" rotates to a new key b
// while a's tokens still verify.
import Provider from 'oidc-provider';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [port, state, kids, ttl] = process.argv.slice(2);
const keys = kids.split(',').map((kid) => {
  const file = join(state, `${kid}.json`);
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(file, JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }));
  }
  return JSON.parse(readFileSync(file, 'utf8'));
});
const client = (id, role) => ({
  client_id: id,
  client_secret: `${id}-secret-0123456789`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  role,
});
const roles = { desk: 'operator', chief: 'admin', norole: undefined };
const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys },
  clients: Object.keys(roles).map((id) => client(id)),
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
  extraTokenClaims: (ctx, token) => (roles[token.clientId] ? { role: roles[token.clientId] } : {}),
});
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
