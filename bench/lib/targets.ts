/** The targets, checked against this run's figures (ratios through the bare anchor). */
import type { Summary } from './report.js'
import type { ScaleResult } from './scale.js'
import { fmt } from './report.js'

interface Row { target: string, value: number, goal: string, met: boolean | undefined, byCpu: number }

export function targetsTable (summary: readonly Summary[], scale: readonly ScaleResult[]): string {
  const by = new Map(summary.map((s) => [s.id, s]))
  const vs = (id: string): number => by.get(id)?.vsBare ?? NaN
  const cpu = (id: string): number => by.get(id)?.vsBareCpu ?? NaN
  const rows: Row[] = []
  const atLeast = (target: string, value: number, goal: number, byCpu?: number): void => {
    rows.push({ target, value, goal: `≥ ${goal}`, met: Number.isFinite(value) ? value >= goal : undefined, byCpu: byCpu ?? NaN })
  }
  for (const alg of ['EdDSA', 'ES256', 'RS256']) atLeast(`portcullis-${alg} ÷ bare`, vs(`portcullis-${alg}`), 0.9, cpu(`portcullis-${alg}`))
  for (const alg of ['ES256', 'RS256', 'HS256']) atLeast(`portcullis-${alg} ÷ express-${alg}`, vs(`portcullis-${alg}`) / vs(`express-${alg}`), 3, cpu(`portcullis-${alg}`) / cpu(`express-${alg}`))
  for (const alg of ['EdDSA', 'ES256', 'RS256', 'HS256']) atLeast(`portcullis-${alg} ÷ fast-gateway-${alg}`, vs(`portcullis-${alg}`) / vs(`fast-gateway-${alg}`), 1, cpu(`portcullis-${alg}`) / cpu(`fast-gateway-${alg}`))
  atLeast('portcullis-HS256-cold ÷ bare', vs('portcullis-HS256-cold'), 0.8, cpu('portcullis-HS256-cold'))
  atLeast('portcullis-ES256-cold ÷ bare', vs('portcullis-ES256-cold'), 0.45, cpu('portcullis-ES256-cold'))
  // issue 10: identity in from an IdP and identity out, held to the targets of our own tokens
  atLeast('portcullis-external-RS256 ÷ bare', vs('portcullis-external-RS256'), 0.9, cpu('portcullis-external-RS256'))
  atLeast('portcullis-external-RS256-cold ÷ bare', vs('portcullis-external-RS256-cold'), 0.45, cpu('portcullis-external-RS256-cold'))
  atLeast('portcullis-EdDSA-assertion ÷ bare', vs('portcullis-EdDSA-assertion'), 0.9, cpu('portcullis-EdDSA-assertion'))
  for (const name of ['1,000,000 denylisted jtis', '10,000 routes']) {
    const r = scale.find((s) => s.name === name)
    atLeast(`${name}: with ÷ without`, r?.ratio ?? NaN, 0.95)
  }
  const atMost = (target: string, value: number, goal: number, unit: string): void => {
    rows.push({ target, value, goal: `≤ ${goal} ${unit}`, met: Number.isFinite(value) ? value <= goal : undefined, byCpu: NaN })
  }
  for (const alg of ['EdDSA', 'ES256']) atMost(`portcullis-${alg} p99 − bare p99 at 50 connections (ms)`, (by.get(`portcullis-${alg}`)?.p99Ms ?? NaN) - (by.get('bare')?.p99Ms ?? NaN), 1, 'ms')
  atMost('one connection: portcullis-EdDSA p50 − bare p50 (ms)', (scale.find((s) => s.name === 'one connection')?.addedP50Us ?? NaN) / 1000, 0.1, 'ms')
  const lines = ['| target | this run (throughput) | same by CPU µs/req | goal | met (throughput) |', '|---|---:|---:|---:|---|']
  for (const r of rows) lines.push(`| ${r.target} | ${fmt(r.value, 2)} | ${fmt(r.byCpu, 2)} | ${r.goal} | ${r.met === undefined ? 'not measured' : r.met ? 'yes' : '**no**'} |`)
  return lines.join('\n')
}
