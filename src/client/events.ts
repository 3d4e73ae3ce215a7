/**
 * The client's events. Payloads never carry a token: listeners get logged, tokens must not.
 */
import type { SessionEndReason } from './errors.js'

export interface SessionEndedEvent {
  reason: SessionEndReason
  /** true when another tab (or client sharing the channel) ended it */
  fromOtherTab: boolean
}

export interface TokenChangedEvent {
  source: 'login' | 'refresh' | 'other_tab'
  /** on the SDK clock; undefined when the gateway gave no lifetime */
  expiresAtMs: number | undefined
}

export interface ClientEvents {
  /** the session is over (refresh refused, logout here or in another tab): send the user to login */
  sessionEnded: SessionEndedEvent
  /** a new access token is in use (login, refresh, adopted from another tab) */
  tokenChanged: TokenChangedEvent
}

type Listener<T> = (event: T) => void

export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>()

  /** returns the function that removes the listener */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(type)
    if (set === undefined) this.#listeners.set(type, set = new Set())
    set.add(listener as Listener<never>)
    return () => { set.delete(listener as Listener<never>) }
  }

  /**
   * A throwing listener must not break the SDK's state changes: its error is rethrown
   * in a microtask, where the platform reports it (as EventTarget does).
   */
  emit<K extends keyof Events>(type: K, event: Events[K]): void {
    for (const listener of [...this.#listeners.get(type) ?? []]) {
      try {
        (listener as Listener<Events[K]>)(event)
      } catch (err) {
        queueMicrotask(() => { throw err })
      }
    }
  }
}
