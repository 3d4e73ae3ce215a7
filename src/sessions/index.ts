/**
 * The sessions module's public surface, for the HTTP layer (plugins/) and the CLI.
 * Nothing here imports Fastify.
 */
export { openStore, DEFAULT_DATA_DIR, REVOCATION_CHANNEL } from './store.js'
export type { OpenStoreOptions, SessionsLogger, Store, UserRecord, SessionRecord } from './store.js'
export { SessionService, DEFAULT_SESSION_OPTIONS } from './service.js'
export type {
  AccessClaims, ClientInfo, SessionInfo, SessionServiceDeps, SessionServiceOptions, SignAccessToken,
  SignAccessTokenInput, SignedAccessToken, TokenPair,
} from './service.js'
export { RevocationFeed, FeedState } from './revocation-feed.js'
export type { FeedStatus, RevocationFeedOptions } from './revocation-feed.js'
export { LoginThrottle, DEFAULT_ACCOUNT_RULE, DEFAULT_IP_RULE } from './throttle.js'
export type { LoginThrottleOptions, ThrottleDecision, ThrottleRule } from './throttle.js'
export { checkCookieRequest, createCookieRequestCheck, CookieRequestError } from './csrf.js'
export type { CookieRequestHeaders, CookieRequestResult, CsrfOptions } from './csrf.js'
export { MAX_PASSWORD_BYTES, checkPasswordLength } from './passwords.js'
export { readPassword } from './read-password.js'
export type { ReadPasswordOptions } from './read-password.js'
export * as admin from './admin-commands.js'
export {
  SessionsError, StoreUnavailableError, InvalidCredentialsError, InvalidGrantError, PasswordLengthError,
  LoginThrottledError, UserExistsError, UserNotFoundError, SessionNotFoundError, InvalidUserInputError, PasswordInputError,
} from './errors.js'
