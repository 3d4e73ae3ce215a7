/**
 * portcullis client SDK: browsers (ES2022 modules) and Node >= 20, no dependencies.
 * Everything public is exported here; the other modules are internal.
 */
export { PortcullisClient, createClient, DEFAULT_AUTH_PATH, DEFAULT_AUTH_TIMEOUT_MS, DEFAULT_REFRESH_MARGIN_SEC } from './client.js'
export { WS_BEARER_PREFIX, WS_POLICY_VIOLATION, WS_PROTOCOL, WS_UPSTREAM_POLICY_VIOLATION } from './websocket.js'
export type { ClientOptions, CrossTabOptions } from './client.js'
export type { Transport } from './auth-api.js'
export {
  ClientErrorCode, InsufficientScopeError, InvalidCredentialsError, NetworkError, PortcullisError, SessionEndReason,
  SessionEndedError, TimeoutError, TooManyAttemptsError, UnauthorizedError, UpstreamError, errorFromResponse,
  GATEWAY_ERROR_HEADER,
} from './errors.js'
export type { PortcullisErrorOptions } from './errors.js'
export type { ClientEvents, SessionEndedEvent, TokenChangedEvent } from './events.js'
export { LocalLocks } from './coordination.js'
export { memoryRefreshTokenStore } from './refresh-store.js'
export type { RefreshTokenStore } from './refresh-store.js'
export type { SessionStatus } from './session.js'
export type {
  BroadcastChannelFactory, BroadcastChannelLike, Clock, FetchLike, LockManagerLike, LockOptionsLike, Timers,
  WebSocketCloseEventLike, WebSocketConstructorLike, WebSocketLike,
} from './platform.js'
