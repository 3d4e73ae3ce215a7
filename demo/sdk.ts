/**
 * The client SDK for browsers, as ES modules: src/client/*.ts transpiled once, in memory,
 * with the project's own TypeScript (a devDependency, so `npm ci && npm run demo` needs no
 * build step). Type-only imports are erased; the `.js` specifiers the sources already use
 * resolve between the served files. The browser suite (test/browser) serves the same text.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const CLIENT_DIR = fileURLToPath(new URL('../src/client/', import.meta.url))

/** file name (`index.js`, `client.js`, …) → JavaScript */
export function clientModules (): ReadonlyMap<string, string> {
  const out = new Map<string, string>()
  for (const file of readdirSync(CLIENT_DIR)) {
    if (!file.endsWith('.ts') || file.endsWith('.d.ts')) continue
    const source = readFileSync(CLIENT_DIR + file, 'utf8')
    const { outputText } = ts.transpileModule(source, {
      fileName: file,
      compilerOptions: {
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.ES2022,
        verbatimModuleSyntax: true,
        removeComments: false,
      },
      reportDiagnostics: false,
    })
    out.set(file.replace(/\.ts$/, '.js'), outputText)
  }
  return out
}
