import type { FastifyReply } from 'fastify'
import type { RemoteKeySetStatus } from '../tokens/issuers/remote-key-set.js'

/**
 * `request.portcullisUser` (and `request.user`) after the kit verified the assertion: the assertion's claims, which are
 * the gateway's verified view of the caller, whoever issued the caller's token.
 */
export interface PortcullisUser {
  /** the caller: the verified token's `sub` */
  sub: string
  /** granted scopes, space-separated (from wherever the token's issuer keeps them) */
  scope: string
  /** the same, as a list */
  scopes: string[]
  /** the issuer of the token the gateway verified: its own tokens.issuer, or an identity provider */
  token_iss: string
  /** the gateway (tokens.issuer) */
  iss: string
  /** this service */
  aud: string
  iat: number
  exp: number
  /** the assertion's own id (not the access token's) */
  jti: string
  /** token claims the gateway left out to keep the assertion within identity.maxHeaderBytes */
  omitted_claims?: string[]
  /** every other claim of the verified token (roles, tenant, groups, …) */
  [claim: string]: unknown
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    user: PortcullisUser
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The caller the kit verified, or null before verification: the kit's own (a getter; no
     * other plugin can write it). `request.user` holds the same object unless an app's own
     * @fastify/jwt verified another token after the kit and replaced it; requireScopes reads this.
     */
    readonly portcullisUser: PortcullisUser | null
  }
  interface FastifyInstance {
    /** the verification as a route hook, for `global: false`: `{ onRequest: app.verifyAssertion }` */
    verifyAssertion: (request: FastifyRequest, reply?: FastifyReply) => Promise<void>
    /** the state of the gateway's keys (undefined with a static JWKS), for this service's health check */
    portcullisUpstream: { readonly keys: RemoteKeySetStatus | undefined }
  }
}
